"""Images as they enter Kiri: any PIL mode to 8-bit RGB (or RGBA) by the image's real range.

PIL's own `convert("RGB")` clips 16-bit and float pixels to 0..255, so a 16-bit grey PNG (values
up to 65535) or a float TIFF comes out nearly all white. Here:

- 8-bit modes (1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr, LAB, HSV) go through PIL's conversion;
- "I;16" and friends (16-bit unsigned) are scaled by their bit depth: v * 255 / 65535;
- "I" (32-bit signed; PIL reads most 16-bit files this way too) is taken as 16-bit when its values
  fit in 0..65535, else stretched from its real minimum to its real maximum;
- "F" (float) is scaled by 0..1 when every finite value lies in it (NaN and -inf as 0, +inf as
  1), else stretched from its finite minimum to its finite maximum (NaN and -inf as the minimum,
  +inf as the maximum); a flat value outside 0..1 is white above it, black below.

An image opened lazily (`Image.open` without `load()`) is decoded here, so callers can check its
header size first; a file that fails to decode is an InvalidRequest naming `field`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["to_rgb", "to_rgba", "to_8bit_grey", "HIGH_BIT_MODES"]

# Modes whose pixels PIL's convert() would clip to 0..255 instead of scaling.
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError)


def _load(image: "Image.Image", field: str) -> None:
    from PIL import Image

    try:
        image.load()
    except (Image.DecompressionBombError, *_UNREADABLE) as exc:
        raise InvalidRequest(field, f"{field} is not an image Kiri can read ({type(exc).__name__})") from exc


def to_8bit_grey(image: "Image.Image") -> "Image.Image":
    """A 16-bit, 32-bit or float single-channel image as an 8-bit "L" image, by its real range."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    data = np.asarray(image)
    if mode.startswith("I;16"):
        scaled = data.astype(np.float64) * (255.0 / 65535.0)
    elif mode == "I":
        data = data.astype(np.float64)
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        scaled = data * (255.0 / 65535.0) if low >= 0 and high <= 65535 else _stretch(data, low, high)
    elif mode == "F":
        data = data.astype(np.float64)
        finite = data[np.isfinite(data)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if low >= 0 and high <= 1:
            scaled = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=0.0) * 255.0
        elif low == high:  # one flat value outside 0..1: its side of the range
            scaled = np.full(data.shape, 255.0 if low > 1 else 0.0)
        else:
            scaled = _stretch(np.nan_to_num(data, nan=low, posinf=high, neginf=low), low, high)
    else:
        raise ValueError(f"not a high bit depth mode: {mode}")
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _stretch(data, low: float, high: float):
    if high <= low:
        return data * 0.0
    return (data - low) * (255.0 / (high - low))


def to_rgb(image: "Image.Image", field: str = "image") -> "Image.Image":
    """A new 8-bit RGB image with the picture of `image`, whatever its mode (see the module doc)."""
    _load(image, field)
    if image.mode in HIGH_BIT_MODES:
        return to_8bit_grey(image).convert("RGB")
    try:
        return image.convert("RGB")
    except _UNREADABLE as exc:
        raise InvalidRequest(field, f"{field} has a pixel mode Kiri cannot convert ({image.mode})") from exc


def to_rgba(image: "Image.Image", field: str = "image") -> "Image.Image":
    """As to_rgb, keeping transparency (LA, PA, P with a transparent colour, RGBA); opaque otherwise."""
    _load(image, field)
    if image.mode in HIGH_BIT_MODES:
        return to_8bit_grey(image).convert("RGBA")
    try:
        return image.convert("RGBA")  # a palette's transparent colour becomes alpha
    except _UNREADABLE as exc:
        raise InvalidRequest(field, f"{field} has a pixel mode Kiri cannot convert ({image.mode})") from exc
