"""The prompt box's token counter (AUTOMATIC1111's "12/75"), for the UI and the API: counted with the
loaded checkpoint's tokenizer, else with the tokenizer of the checkpoint Kiri would load, read from
disk (never loading a model); None when neither is at hand.

The counter runs beside jobs, on the UI's threads: it counts with its own copy of the loaded
tokenizer (taken again when textual-inversion tokens were added to it), never with the one a running
job tokenizes with (a fast tokenizer shared between threads can fail with "Already borrowed")."""

from __future__ import annotations

import copy
import functools
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import KiriError
from webui.engine.generation.conditioning import chunked_families, token_counts

if TYPE_CHECKING:
    from webui.engine.context import Engine

log = logging.getLogger(__name__)

CHUNKED_FAMILIES = ("sd1", "sd2", "sdxl")


def prompt_tokens(engine: "Engine", text: str, steps: int = 20) -> tuple[int, int] | None:
    try:
        return _count(engine, text, steps)
    except Exception as exc:  # noqa: BLE001 - a counter never stops the page; it shows nothing
        log.debug("token counter: %s", exc)
        return None


def _count(engine: "Engine", text: str, steps: int) -> tuple[int, int] | None:
    models = engine.models_if_created()
    current = models.current if models is not None else None
    if current is not None:
        tokenizer = getattr(current.pipeline, "tokenizer", None)
        if tokenizer is None:
            return None
        return token_counts(_own_copy(tokenizer), text, current.pipeline, chunked_families(current.pipeline), steps)
    try:
        entry = engine.current_entry()
    except KiriError:  # no checkpoint at all
        return None
    folder = (entry.path / "tokenizer" if entry.format == "diffusers"
              else engine.catalog.models_dir / "configs" / (entry.family or "") / "tokenizer")
    tokenizer = _tokenizer_on_disk(str(folder))
    if tokenizer is None:
        return None
    return token_counts(tokenizer, text, None, entry.family in CHUNKED_FAMILIES, steps)


_copy_lock = threading.Lock()
_copy: tuple[Any, int, Any] | None = None  # (the loaded tokenizer, its length when copied, the copy)


def _own_copy(tokenizer: Any) -> Any:
    global _copy
    with _copy_lock:
        if _copy is None or _copy[0] is not tokenizer or _copy[1] != len(tokenizer):
            _copy = (tokenizer, len(tokenizer), copy.deepcopy(tokenizer))
        return _copy[2]


@functools.lru_cache(maxsize=4)
def _tokenizer_on_disk(folder: str) -> Any:
    if not Path(folder).is_dir():
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a counter never stops the page; it shows nothing
        log.info("no tokenizer for the token counter in %s: %s", folder, exc)
        return None
