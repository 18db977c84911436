"""Preprocessors driven by a mask: inpaint and segmentation colours."""

from __future__ import annotations

from typing import Any

from ._cv import cv2
import numpy as np

from webui.engine.core.errors import InvalidRequest

from .registry import Preprocessor

# ADE20K's 150 class colours in class order (wall, building, sky, floor, tree, ...), the palette the
# ControlNet segmentation models were trained on (UniFormer / OneFormer ADE20K maps).
ADE20K_PALETTE = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255), (255, 71, 0),
    (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255),
    (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255),
    (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82), (0, 10, 255),
    (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10),
    (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255),
    (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0),
    (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255), (255, 0, 122),
    (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255),
    (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255), (71, 0, 255),
    (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194),
    (102, 255, 0), (92, 0, 255),
], dtype=np.uint8)
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


def as_mask(mask: Any, shape: tuple[int, int], field: str = "mask") -> np.ndarray:
    """A bool HxW mask (True = repaint) from HxW / HxWxC uint8 (>127), bool or 0..1 float, at `shape`."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[:, :, 3] if arr.shape[2] == 4 and arr[:, :, 3].min() < 255 else arr[:, :, :3].max(axis=2)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidRequest(field, f"{field} must be an HxW picture (255 = repaint), got shape {arr.shape}")
    if arr.dtype == bool:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidRequest(field, f"{field} has NaN or infinite values")
        out = arr > (0.5 if arr.max() <= 1.0 else 127.5)
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr > 127
    else:
        raise InvalidRequest(field, f"{field} must hold numbers, got {arr.dtype}")
    if out.shape != tuple(shape):
        out = cv2.resize(out.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return out


def inpaint(image, resolution, a=None, b=None, *, mask=None, **_):
    """The picture with the pixels to repaint set to 0 (black).

    sd-webui-controlnet hands the inpaint ControlNet a float map whose masked pixels are -1, which
    an 8-bit picture cannot hold; the caller turns this map into that tensor with
    `inpaint_condition(control_map, mask)`. "inpaint_only" and "inpaint" (global harmonious) make the
    same map; they differ after generation (inpaint_only pastes back only the masked area).
    """
    if mask is None:
        raise InvalidRequest("mask", "inpaint needs a mask (HxW, 255 = repaint); none was given")
    marked = as_mask(mask, image.shape[:2])
    out = image.copy()
    out[marked] = 0
    return out


def inpaint_condition(control_map: np.ndarray, mask: Any) -> np.ndarray:
    """The inpaint ControlNet's input: HxWx3 float32 in 0..1 with the masked pixels at -1."""
    out = np.asarray(control_map, dtype=np.float32) / 255.0
    out[as_mask(mask, out.shape[:2])] = -1.0
    return out


def _class_index(key: Any) -> int:
    """An ADE20K class (0-based) from its index or its name ("person", "sky")."""
    if isinstance(key, str):
        name = key.strip().lower()
        if name not in ADE20K_CLASSES:
            raise InvalidRequest("mask", f"unknown ADE20K class {key!r}; classes: {', '.join(ADE20K_CLASSES)}")
        return ADE20K_CLASSES.index(name)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(ADE20K_CLASSES):
        return int(key)
    raise InvalidRequest("mask", f"ADE20K class must be a name or 0..{len(ADE20K_CLASSES) - 1}, got {key!r}")


def label_map(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """An HxW int label map (0 = unlabelled, k = ADE20K class k - 1) from the forms `segmentation` accepts:

    - an HxW integer array: already such a label map (ADE20K's own annotation format);
    - a list / tuple / NxHxW stack of masks (bool, or uint8 with 255 inside): mask i is class i
      (wall, building, sky, floor, tree, ...), later masks over earlier ones;
    - a dict {ADE20K class name or 0-based index: mask}: each mask coloured as that class, e.g.
      {"person": person_mask, "sky": sky_mask}, so the seg model draws the right kind of thing.
    Masks of another size are scaled (nearest) to the picture's.
    """
    if isinstance(mask, dict):
        if not mask:
            raise InvalidRequest("mask", "segmentation needs at least one mask; got an empty mapping")
        pairs = [(_class_index(k), as_mask(m, shape)) for k, m in mask.items()]
    elif isinstance(mask, (list, tuple)):
        if not mask:
            raise InvalidRequest("mask", "segmentation needs at least one mask; got an empty list")
        pairs = [(i, as_mask(m, shape)) for i, m in enumerate(mask)]
    else:
        arr = np.asarray(mask)
        if arr.ndim == 3:  # an NxHxW stack of masks
            pairs = [(i, as_mask(m, shape)) for i, m in enumerate(arr)]
        elif arr.ndim == 2 and arr.dtype == bool:
            pairs = [(0, as_mask(arr, shape))]
        elif arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
            if arr.shape != tuple(shape):
                arr = cv2.resize(arr.astype(np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
            return arr.astype(np.int64)
        else:
            raise InvalidRequest("mask", "segmentation needs an HxW integer label map, a list of HxW masks or a "
                                         f"mapping of class to mask, got an array of shape {arr.shape} ({arr.dtype})")
    labels = np.zeros(shape, np.int64)
    for cls, m in pairs:
        labels[m] = cls + 1
    return labels


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """ADE20K colours: label k >= 1 gets the colour of class k - 1 (wrapping after 150); 0 and below stay black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    inside = labels > 0
    out[inside] = ADE20K_PALETTE[(labels[inside] - 1) % len(ADE20K_PALETTE)]
    return out


def segmentation(image, resolution, a=None, b=None, *, mask=None, **_):
    if mask is None:
        raise InvalidRequest("mask", "segmentation needs masks (an HxW label map, a list of HxW masks or "
                                     "{class: mask}); none was given")
    return colour_labels(label_map(mask, image.shape[:2]))


def region_preprocessors() -> list[Preprocessor]:
    return [
        Preprocessor("inpaint_only", inpaint, label="Inpaint: repaint only the masked area (needs a mask)"),
        Preprocessor("inpaint", inpaint, aliases=("inpaint_global_harmonious",),
                     label="Inpaint (harmonious): repaint the masked area, letting the rest blend (needs a mask)"),
        Preprocessor("segmentation", segmentation, aliases=("seg_from_masks",),
                     label="Segmentation: colour regions from masks as the seg model expects (needs masks)"),
    ]
