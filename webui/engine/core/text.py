"""Checks on text the user sends (prompts), shared by every capability that reads one."""

from __future__ import annotations

import re

from webui.engine.core.errors import InvalidRequest

# Far beyond any tokenizer's window (A1111 users write a few thousand at most); longer is refused.
MAX_PROMPT_CHARS = 20_000
# UTF-16 halves without their pair: no character at all, and no encoder (UTF-8, the tokenizer's,
# PNG's iTXt) can write them.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(name: str, text: str, max_chars: int = MAX_PROMPT_CHARS) -> None:
    """Refuse a text longer than `max_chars`, or holding a lone UTF-16 surrogate.

    Refused rather than repaired: a surrogate is half of a character the client meant (an emoji
    cut in two by its own string slicing), so any replacement would generate, and record in the
    infotext, a prompt nobody wrote; the message says where it is so the client can fix its text.
    """
    if len(text) > max_chars:
        raise InvalidRequest(name, f"the {name.replace('_', ' ')} is {len(text)} characters long; "
                                   f"Kiri reads at most {max_chars}")
    bad = LONE_SURROGATE.search(text)
    if bad:
        raise InvalidRequest(name, f"the {name.replace('_', ' ')} holds half of a UTF-16 character pair "
                                   f"(U+{ord(bad.group()):04X} at position {bad.start()}), not a character: "
                                   "send whole characters (an emoji is two UTF-16 units)")
