"""The Library's "most like this picture" order: each picture's look is its thumbnail shrunk to 8x8 RGB
(192 bytes: colours and layout, not meaning), kept in the index beside the file's stamp; pictures are
ordered by the distance between looks. Looks are taken in the background after the start scan (with the
thumbnails) and, for those still missing, while a search waits, within a time budget; the page says how
many could not be compared yet.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

SIDE = 8
SIZE = SIDE * SIDE * 3
BUDGET_S = 1.5  # how long a search may spend taking missing looks before it answers


def take_look(library: Any, row: dict) -> bytes | None:
    """The picture's look (from its thumbnail, made now if missing), recorded in the index; None for one
    that cannot be drawn."""
    from PIL import Image

    thumb = library.thumbnail_of(row)
    if thumb is None:
        return None
    try:
        with Image.open(thumb) as image:
            vector = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX).tobytes()
    except OSError as exc:
        log.info("library: no look for %s: %s", row["path"], exc)
        return None
    library.index.set_look(row["id"], library.index.look_stamp(row), vector)
    return vector


def fill_missing(library: Any, budget_s: float | None = None, batch: int = 200) -> int:
    """Take the looks (and thumbnails) of pictures that have none, newest first; stop after `budget_s`
    seconds (None: all). Returns how many were taken."""
    started, taken, failed = time.monotonic(), 0, set()
    while budget_s is None or time.monotonic() - started < budget_s:
        rows = [r for r in library.index.missing_looks(batch + len(failed)) if r["id"] not in failed]
        if not rows:
            break
        for row in rows:
            if budget_s is not None and time.monotonic() - started >= budget_s:
                break
            if take_look(library, row) is None:
                failed.add(row["id"])  # a clip or a picture that cannot be drawn: not asked again in this pass
            else:
                taken += 1
    return taken


def rank(library: Any, reference: dict, candidates: Callable[[], list[dict]]) -> tuple[list[int], int]:
    """The ids of the pictures `candidates()` gives (rows with `id` and their current look `v`, or None;
    asked again after missing looks were taken), most like `reference` first, the reference itself left out,
    and how many could not be compared yet."""
    from webui.engine.core.errors import InvalidRequest

    vector = library.index.look(reference) or take_look(library, reference)
    if vector is None:
        raise InvalidRequest("similar_to", "this picture cannot be drawn, so no picture can be compared with it")
    rows = candidates()
    if any(r["v"] is None for r in rows):
        fill_missing(library, BUDGET_S)
        rows = candidates()
    rows = [r for r in rows if r["id"] != reference["id"]]
    usable = [r for r in rows if r["v"] is not None and len(r["v"]) == SIZE]
    if not usable:
        return [], len(rows)
    matrix = np.frombuffer(b"".join(r["v"] for r in usable), dtype=np.uint8).reshape(len(usable), SIZE)
    distance = np.square(matrix.astype(np.float32) - np.frombuffer(vector, dtype=np.uint8).astype(np.float32)).sum(axis=1)
    order = np.argsort(distance, kind="stable")  # ties keep the newest first
    return [usable[i]["id"] for i in order], len(rows) - len(usable)
