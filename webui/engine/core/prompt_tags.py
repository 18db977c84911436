"""Extra-network tags in a prompt, as AUTOMATIC1111 writes them: `<kind:arg1:arg2...>`
(`<lora:outline:0.8>`, `<lora:name:unet_w:te_w>`, `<lyco:name:1>`, `<hypernet:name:1>`).

They are cut out of the text before the text encoder reads it, in every family (the infotext keeps
the prompt as written), and handed to the add-on that registered the kind (AddonSpec.prompt_tags):
the prompt names the add-on as `request.addons` would. A kind no add-on reads is dropped from the
text with a warning, as A1111 skips an unknown extra network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PromptTag", "TAG", "split_tags", "strip_tags"]

TAG = re.compile(r"<(\w+):([^>]+)>")  # A1111's extra_networks.re_extra_net


@dataclass(frozen=True)
class PromptTag:
    kind: str  # "lora"
    args: tuple[str, ...]  # ("outline", "0.8"), each stripped
    negative: bool = False  # found in the negative prompt

    @property
    def text(self) -> str:
        return f"<{self.kind}:{':'.join(self.args)}>"


def split_tags(text: str | None, negative: bool = False) -> tuple[str, list[PromptTag]]:
    """(the text without its tags, the tags in order)."""
    tags: list[PromptTag] = []

    def cut(match: re.Match) -> str:
        tags.append(PromptTag(match.group(1).lower(), tuple(a.strip() for a in match.group(2).split(":")), negative))
        return ""

    return TAG.sub(cut, text or ""), tags


def strip_tags(text: str | None) -> str:
    return split_tags(text)[0]
