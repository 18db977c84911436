"""Short synthetic clips for the video tests: a moving square, written with PyAV, and read back."""

from __future__ import annotations

import io
from pathlib import Path

SIZE = 64


def moving_square_frames(count: int = 6, size: int = SIZE, step: int = 4):
    from PIL import Image, ImageDraw

    frames = []
    for i in range(count):
        image = Image.new("RGB", (size, size), (30, 60, 160))
        draw = ImageDraw.Draw(image)
        x = 8 + i * step
        draw.rectangle([x, 20, x + 16, 36], fill=(230, 40, 40))
        frames.append(image)
    return frames


def write_clip(path: Path, frames, fps: int = 8) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path_or_bytes) -> tuple[list, float, dict]:
    import av

    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(source) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate), dict(container.metadata)
