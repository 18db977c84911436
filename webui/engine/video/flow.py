"""Optical flow with OpenCV (no weights): warping the previous output onto the next frame, and
in-between frames for frame-rate interpolation.

Flow is DIS (OpenCV's fast dense inverse search) on grey frames. `flow(a, b)` gives, for each pixel
of `a`, where it moved to in `b`; warping an image by a flow samples it backwards (cv2.remap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def flow(a: "np.ndarray", b: "np.ndarray") -> "np.ndarray":
    """Dense flow from RGB uint8 frame `a` to frame `b`: H x W x 2 float32 (dx, dy)."""
    import cv2

    grey_a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    grey_b = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(grey_a, grey_b, None)


def warp(image: "np.ndarray", field: "np.ndarray", scale: float = 1.0) -> "np.ndarray":
    """Sample `image` at (x + scale * dx, y + scale * dy) for every pixel (backward warping)."""
    import cv2
    import numpy as np

    height, width = field.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(image, xs + scale * field[..., 0], ys + scale * field[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def warp_onto(previous_output: "Image.Image", previous_input: "Image.Image", next_input: "Image.Image") -> "Image.Image":
    """The previous output moved the way the source moved from its frame to the next one."""
    import numpy as np
    from PIL import Image

    size = next_input.size
    prev_in = np.asarray(previous_input.convert("RGB").resize(size))
    next_in = np.asarray(next_input.convert("RGB"))
    prev_out = np.asarray(previous_output.convert("RGB").resize(size))
    backward = flow(next_in, prev_in)  # for each pixel of the next frame: where it was in the previous one
    return Image.fromarray(warp(prev_out, backward))


def in_betweens(a: "Image.Image", b: "Image.Image", count: int) -> list["Image.Image"]:
    """`count` frames between a and b, each both neighbours warped to its time and blended."""
    import numpy as np
    from PIL import Image

    first = np.asarray(a.convert("RGB"))
    second = np.asarray(b.convert("RGB").resize(a.size))
    forward, backward = flow(first, second), flow(second, first)
    frames = []
    for i in range(1, count + 1):
        t = i / (count + 1)
        # At time t a pixel came from x - t*F(a->b) in a and from x - (1-t)*F(b->a) in b (flows taken
        # at the target pixel, a good approximation for smooth motion).
        from_a = warp(first, forward, -t).astype(np.float32)
        from_b = warp(second, backward, -(1 - t)).astype(np.float32)
        mixed = (1 - t) * from_a + t * from_b
        frames.append(Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8)))
    return frames
