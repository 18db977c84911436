"""Mask tools: pure numpy/OpenCV on boolean arrays (True inside), and the L images Kiri hands out.

Every function takes and returns `numpy` bool arrays of one size, so they compose: the UI's
"combine" and "grow/shrink/feather" buttons, the API and the tests call the same ones. Images
cross the boundary with `to_array` (any PIL mode; > 127 is inside) and `to_image` (mode L, 255
inside), so a mask Kiri writes is exactly what Inpaint reads (white = repaint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.limits import DEFAULT_MAX_PIXELS, check_input

if TYPE_CHECKING:
    from PIL import Image

MAX_RADIUS = 256  # grow/shrink/feather beyond this many pixels is refused (cost grows with r²)
OPERATIONS = ("union", "intersect", "subtract")
TOOLS = ("grow", "shrink", "feather", "fill holes", "keep largest", "invert")


def to_array(mask: "Image.Image | np.ndarray", field: str = "mask", size: tuple[int, int] | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask as a bool array (True inside: values above 127); `size` (width, height) must match.
    A picture is checked against the pixel budget (Settings.max_pixels) on its header, before decoding."""
    from PIL import Image

    if isinstance(mask, Image.Image):
        check_input(field, mask.width, mask.height, limit=max_pixels)
        if size is not None and mask.size != tuple(size):  # refused before decoding, not after
            raise InvalidRequest(field, f"{field} is {mask.width}x{mask.height} but the image is {size[0]}x{size[1]}: "
                                        "a mask must have the image's size")
        if mask.mode in ("RGBA", "LA"):
            # A painted layer: alpha says where the strokes are.
            mask = mask.getchannel("A")
        array = np.asarray(mask.convert("L"))
    elif isinstance(mask, np.ndarray):
        array = mask if mask.ndim == 2 else mask[..., 0]
    else:
        raise InvalidRequest(field, f"{field} is not a mask image")
    if array.dtype == bool:
        out = array.copy()
    else:
        out = array > 127
    if size is not None and (out.shape[1], out.shape[0]) != tuple(size):
        raise InvalidRequest(field, f"{field} is {out.shape[1]}x{out.shape[0]} but the image is {size[0]}x{size[1]}: "
                                    "a mask must have the image's size")
    return out


def to_image(mask: np.ndarray) -> "Image.Image":
    """A bool (or 0..255 soft) mask as a PIL image of mode L, 255 inside."""
    from PIL import Image

    data = mask.astype(np.uint8) * 255 if mask.dtype == bool else np.clip(mask, 0, 255).astype(np.uint8)
    return Image.fromarray(data, mode="L")


def _same_size(masks: Sequence[np.ndarray], field: str) -> None:
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise InvalidRequest(field, f"the masks have different sizes ({', '.join(f'{s[1]}x{s[0]}' for s in shapes)})")


def union(masks: Iterable[np.ndarray], field: str = "masks") -> np.ndarray:
    masks = list(masks)
    if not masks:
        raise InvalidRequest(field, "pick at least one mask")
    _same_size(masks, field)
    return np.logical_or.reduce(masks)


def intersect(masks: Iterable[np.ndarray], field: str = "masks") -> np.ndarray:
    masks = list(masks)
    if not masks:
        raise InvalidRequest(field, "pick at least one mask")
    _same_size(masks, field)
    return np.logical_and.reduce(masks)


def subtract(first: np.ndarray, others: Iterable[np.ndarray], field: str = "masks") -> np.ndarray:
    """`first` without anything in the others."""
    others = list(others)
    _same_size([first, *others], field)
    return first & ~union(others, field) if others else first.copy()


def combine(masks: Sequence[np.ndarray], operation: str, field: str = "operation") -> np.ndarray:
    """union / intersect / subtract (the first minus the rest) of picked masks."""
    if operation == "union":
        return union(masks)
    if operation == "intersect":
        return intersect(masks)
    if operation == "subtract":
        if not masks:
            raise InvalidRequest("masks", "pick at least one mask")
        return subtract(masks[0], masks[1:])
    raise InvalidRequest(field, f"unknown mask operation {operation!r}; one of {', '.join(OPERATIONS)}")


def _radius(radius: int, field: str) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 <= radius <= MAX_RADIUS:
        raise InvalidRequest(field, f"{field} must be a number of pixels from 0 to {MAX_RADIUS} (got {radius!r})")
    return int(round(radius))


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grow(mask: np.ndarray, radius: int, field: str = "radius") -> np.ndarray:
    """Every pixel within `radius` of the mask (a dilation by a disk)."""
    import cv2

    r = _radius(radius, field)
    if r == 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), _disk(r), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def shrink(mask: np.ndarray, radius: int, field: str = "radius") -> np.ndarray:
    """The mask without its outer `radius` pixels (an erosion; the image border is not an edge)."""
    import cv2

    r = _radius(radius, field)
    if r == 0:
        return mask.copy()
    return cv2.erode(mask.astype(np.uint8), _disk(r), borderType=cv2.BORDER_REPLICATE) > 0


def feather(mask: np.ndarray, radius: int, field: str = "radius") -> np.ndarray:
    """A soft uint8 mask (0..255): the edge blurred over about `radius` pixels each side."""
    import cv2

    r = _radius(radius, field)
    soft = mask.astype(np.uint8) * 255 if mask.dtype == bool else mask.astype(np.uint8)
    if r == 0:
        return soft.copy()
    return cv2.GaussianBlur(soft, (2 * r + 1, 2 * r + 1), sigmaX=r / 2, borderType=cv2.BORDER_REPLICATE)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region of outside pixels that does not touch the border filled in."""
    import cv2

    outside = (~mask).astype(np.uint8)
    count, labels = cv2.connectedComponents(outside, connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    reached = np.isin(labels, list(border)) & (outside > 0)
    return mask | ((outside > 0) & ~reached)


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected region of the mask (empty stays empty)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask.copy()
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def invert(mask: np.ndarray) -> np.ndarray:
    return ~mask


def apply_tool(mask: np.ndarray, tool: str, radius: int = 0, field: str = "tool") -> np.ndarray:
    """One of TOOLS by name (feather returns a soft uint8 mask; the others bool)."""
    if tool == "grow":
        return grow(mask, radius)
    if tool == "shrink":
        return shrink(mask, radius)
    if tool == "feather":
        return feather(mask, radius)
    if tool == "fill holes":
        return fill_holes(mask)
    if tool == "keep largest":
        return keep_largest(mask)
    if tool == "invert":
        return invert(mask)
    raise InvalidRequest(field, f"unknown mask tool {tool!r}; one of {', '.join(TOOLS)}")


# A colour per mask for overlays: distinct hues, readable on light and dark pictures.
PALETTE = [(255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 0), (200, 80, 255), (0, 220, 220),
           (255, 128, 0), (255, 96, 200)]


def overlay(image: "Image.Image", masks: Sequence[np.ndarray], alpha: float = 0.5, outline: bool = True) -> "Image.Image":
    """The picture with each mask tinted in its own colour (and outlined): a preview."""
    import cv2
    from PIL import Image

    base = np.asarray(image.convert("RGB")).astype(np.float32)
    out = base.copy()
    for index, mask in enumerate(masks):
        colour = np.array(PALETTE[index % len(PALETTE)], np.float32)
        weight = (mask.astype(np.float32) / 255.0 if mask.dtype != bool else mask.astype(np.float32))[..., None] * alpha
        out = out * (1 - weight) + colour * weight
        if outline:
            binary = (mask > 127 if mask.dtype != bool else mask).astype(np.uint8)
            edge = binary - cv2.erode(binary, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
            out[edge > 0] = colour
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def cut_out(image: "Image.Image", mask: np.ndarray) -> "Image.Image":
    """The picture's pixels inside the mask, black elsewhere (the extension's "masked image")."""
    from PIL import Image

    base = np.asarray(image.convert("RGB"))
    inside = mask if mask.dtype == bool else mask > 127
    return Image.fromarray(np.where(inside[..., None], base, 0).astype(np.uint8), mode="RGB")
