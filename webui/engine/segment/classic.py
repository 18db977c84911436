"""The segmenters that need no weights, always present: flood fill from clicks, GrabCut from a box.

Flood fill grows a region from each positive click through pixels whose colour is within a
tolerance of the clicked pixel's (OpenCV floodFill, fixed range, 4-connected); negative clicks'
regions are taken out. GrabCut (cv2.grabCut) models the colours inside and outside a box and cuts
the object out of it; clicks, when given, pin pixels to the object or the background.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

MAX_TOLERANCE = 64  # colour levels per channel at threshold 0
GRABCUT_ITERATIONS = 5
GRABCUT_MAX_SIDE = 1024  # GrabCut is O(pixels x iterations): larger pictures are cut at this size, then scaled


def tolerance(threshold: float) -> int:
    """Threshold 1 takes the clicked colour only; 0 anything within MAX_TOLERANCE levels per channel.
    Higher is stricter, as for the models (a higher threshold keeps less)."""
    return int(round((1.0 - threshold) * MAX_TOLERANCE))


def _fill_from(rgb: np.ndarray, x: int, y: int, tol: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    cv2.floodFill(rgb.copy(), mask, (int(x), int(y)), 0, (tol,) * 3, (tol,) * 3, flags)
    return mask[1:-1, 1:-1] > 0


def flood_fill(image: "Image.Image", points: list[tuple[float, float, int]], threshold: float) -> np.ndarray:
    """The union of the regions grown from the positive points, minus those of the negative ones."""
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    tol = tolerance(threshold)
    inside = np.zeros(rgb.shape[:2], bool)
    for x, y, label in points:
        if label:
            inside |= _fill_from(rgb, int(x), int(y), tol)
    for x, y, label in points:
        if not label:
            inside &= ~_fill_from(rgb, int(x), int(y), tol)
    return inside


def grabcut(image: "Image.Image", box: tuple[float, float, float, float], points: list[tuple[float, float, int]] = (),
            iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """The object inside `box` (x0, y0, x1, y1; x1 and y1 exclusive), cut from its background."""
    import cv2

    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    scale = min(1.0, GRABCUT_MAX_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    sh, sw = small.shape[:2]
    x0, y0, x1, y1 = (int(np.floor(box[0] * scale)), int(np.floor(box[1] * scale)),
                      int(np.ceil(box[2] * scale)), int(np.ceil(box[3] * scale)))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(sw, max(x1, x0 + 1)), min(sh, max(y1, y0 + 1))
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    for x, y, label in points:
        px, py = min(sw - 1, int(x * scale)), min(sh - 1, int(y * scale))
        cv2.circle(mask, (px, py), max(1, round(2 * scale)), cv2.GC_FGD if label else cv2.GC_BGD, -1)
    if (x1 - x0) * (y1 - y0) >= sw * sh:
        # A box over the whole picture leaves GrabCut no background to learn from: the border row is its guess.
        mask[[0, -1], :] = np.where(mask[[0, -1], :] == cv2.GC_FGD, cv2.GC_FGD, cv2.GC_PR_BGD)
        mask[:, [0, -1]] = np.where(mask[:, [0, -1]] == cv2.GC_FGD, cv2.GC_FGD, cv2.GC_PR_BGD)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(small[..., ::-1])
    try:
        cv2.grabCut(bgr, mask, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        # Too few pixels of one side to model (a box of a few pixels, a flat picture): keep the box's guess.
        pass
    inside = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if scale < 1:
        inside = cv2.resize(inside.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return inside
