"""The Library's "most like this picture" order: each picture's look is its thumbnail shrunk to 8x8 RGB
(192 bytes: colours and layout, not meaning), kept in the index beside the file's stamp; pictures are
ordered by the distance between looks. Looks are taken in the background after the start scan (with the
thumbnails) and, for those still missing, while a search waits, within a time budget; the page says how
many could not be compared yet.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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


def rank(library: Any, reference: dict, candidates: list[dict]) -> tuple[list[int], int]:
    """The candidates' ids, most like `reference` first (the reference itself left out), and how many
    could not be compared yet (no look recorded for their current file)."""
    from webui.engine.core.errors import InvalidRequest

    known = library.index.looks()
    stamp = library.index.look_stamp(reference)
    ref = known.get(reference["id"])
    vector = ref[1] if ref is not None and ref[0] == stamp else take_look(library, reference)
    if vector is None:
        raise InvalidRequest("similar_to", "this picture cannot be drawn, so no picture can be compared with it")
    if any(known.get(c["id"], ("",))[0] != library.index.look_stamp(c) for c in candidates):
        fill_missing(library, BUDGET_S)
        known = library.index.looks()
    ids, looks, waiting = [], [], 0
    for c in candidates:
        if c["id"] == reference["id"]:
            continue
        found: Any = known.get(c["id"])
        if found is None or found[0] != library.index.look_stamp(c) or len(found[1]) != SIZE:
            waiting += 1
            continue
        ids.append(c["id"])
        looks.append(found[1])
    if not ids:
        return [], waiting
    matrix = np.frombuffer(b"".join(looks), dtype=np.uint8).reshape(len(ids), SIZE).astype(np.float32)
    distance = np.square(matrix - np.frombuffer(vector, dtype=np.uint8).astype(np.float32)).sum(axis=1)
    order = np.argsort(distance, kind="stable")  # ties keep the newest first
    return [ids[i] for i in order], waiting
