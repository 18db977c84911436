"""Video files in and out: PyAV for MP4/WebM/MOV, PIL for GIF and animated WebP, zips of frames.

Reading streams frames one at a time (the selection of time range, every Nth frame and max size
applied as they come), so a long clip never sits in memory whole. Writing makes an H.264 MP4
(yuv420p, even sides: what every browser plays) with the infotext as its `comment`, a GIF, an
animated WebP and a zip of the PNG frames; each file appears under its final name only once
complete (temp file, then rename).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from PIL import Image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_ZIP_FPS = 8.0
MAX_ZIP_MEMBERS = 10_000


@dataclass(frozen=True)
class VideoInfo:
    """What a probe of the file says, before any frame is decoded."""

    format: str  # "video" (PyAV), "gif", "zip"
    width: int
    height: int
    fps: float
    frames: int  # counted or estimated from duration x fps
    duration: float  # seconds
    largest: tuple[int, int] | None = None  # the largest frame when they differ (a zip); None: width x height

    @property
    def frame_size(self) -> tuple[int, int]:
        """The largest frame's size, for the pixel budget; read_frames() refuses any frame larger."""
        return self.largest or (self.width, self.height)


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source
    time: float  # seconds from the start
    image: "Image.Image"


# Still-image files by their first bytes: FFmpeg opens each as a one-frame "video", so they are
# named and refused before it sees them (a WebP is a still unless it holds an ANIM chunk).
STILL_IMAGES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"), (b"qoif", "QOI"))


# FFmpeg's demuxers of single pictures (besides the "*_pipe" ones).
IMAGE_DEMUXERS = frozenset({"image2"})


def sniff(data: bytes) -> str:
    if data[:4] == b"PK\x03\x04":
        return "zip"
    if data[:4] == b"GIF8":
        return "gif"
    return "video"


def still_image(data: bytes) -> str | None:
    """The image format of a still picture's bytes (PNG, JPEG, WebP...), or None."""
    for magic, name in STILL_IMAGES:
        if data.startswith(magic):
            return None if name == "PNG" and b"acTL" in data[:4096] else name  # an APNG is a clip
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and b"ANIM" not in data[12:4096]:
        return "WebP"
    return None


def _not_a_clip(field: str, what: str) -> InvalidRequest:
    return InvalidRequest(field, f"{field} is {what}, not a video: upload an MP4, WebM, MOV or GIF file, "
                                 "or a zip of frames")


def probe(data: bytes, field: str = "video") -> VideoInfo:
    """The clip's size, frame rate, frame count and duration, from headers only (no frame decoded);
    a clear error if it is not a video. A zip's every frame header is read (the largest is kept)."""
    if not data:
        raise InvalidRequest(field, f"{field} is empty: upload an MP4, WebM, MOV or GIF file, or a zip of frames")
    kind = sniff(data)
    image_format = still_image(data)
    if image_format is not None:
        raise _not_a_clip(field, f"a {image_format} image")
    try:
        if kind == "zip":
            names = _zip_frames(data, field)
            from PIL import Image

            sizes = []
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in names:
                    with archive.open(name) as member:
                        sizes.append(Image.open(member).size)  # the header only
            width, height = sizes[0]
            largest = max(sizes, key=lambda size: size[0] * size[1])
            return VideoInfo("zip", width, height, DEFAULT_ZIP_FPS, len(names), len(names) / DEFAULT_ZIP_FPS,
                             largest if largest != sizes[0] else None)
        if kind == "gif":
            from PIL import Image

            with Image.open(io.BytesIO(data)) as gif:
                count = getattr(gif, "n_frames", 1)
                if count < 2:
                    raise _not_a_clip(field, "a GIF image of one frame")
                duration_ms = gif.info.get("duration") or 100
                return VideoInfo("gif", gif.width, gif.height, 1000 / duration_ms, count, count * duration_ms / 1000)
        import av

        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise InvalidRequest(field, f"{field} has no video stream")
            if container.format.name.endswith("_pipe") or container.format.name in IMAGE_DEMUXERS:
                animated_webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
                raise _not_a_clip(field, "an animated WebP, which Kiri does not read as a clip" if animated_webp
                                  else f"a still image ({container.format.name})")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1e6
            frames = stream.frames or round(duration * fps)
            width, height = stream.codec_context.width, stream.codec_context.height
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure on user bytes is bad input
        raise InvalidRequest(field, f"{field} is not a video Kiri can read ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if width < 1 or height < 1 or fps <= 0:
        raise InvalidRequest(field, f"{field} has no readable frames (size {width}x{height}, {fps:g} fps)")
    return VideoInfo("video", width, height, fps, frames, duration)


def _zip_frames(data: bytes, field: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise InvalidRequest(field, f"the zip holds {len(infos)} files; Kiri reads at most {MAX_ZIP_MEMBERS}")
        names = sorted(i.filename for i in infos if not i.is_dir() and i.filename.lower().endswith(FRAME_SUFFIXES)
                       and not Path(i.filename).name.startswith("."))
    if not names:
        raise InvalidRequest(field, "the zip holds no frames (PNG, JPEG or WebP files)")
    return names


def _within_probe(info: VideoInfo, width: int, height: int, field: str) -> None:
    """A frame larger than the probe said (a stream that changes size) is refused before conversion:
    the pixel budget was checked on the probe's size."""
    largest = info.frame_size
    if width * height > largest[0] * largest[1]:
        raise InvalidRequest(field, f"{field} has a frame of {width}x{height}, larger than its header says "
                                    f"({largest[0]}x{largest[1]})")


def read_frames(data: bytes, info: VideoInfo, field: str = "video") -> Iterator[Frame]:
    """Every frame of the clip, decoded one at a time, as RGB; none larger than the probe said."""
    try:
        if info.format == "zip":
            from PIL import Image

            names = _zip_frames(data, field)
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for index, name in enumerate(names):
                    with archive.open(name) as member:
                        image = Image.open(member)
                        _within_probe(info, image.width, image.height, field)
                        yield Frame(index, index / info.fps, image.convert("RGB"))
            return
        if info.format == "gif":
            from PIL import Image, ImageSequence

            with Image.open(io.BytesIO(data)) as gif:
                elapsed = 0.0
                for index, frame in enumerate(ImageSequence.Iterator(gif)):
                    _within_probe(info, frame.width, frame.height, field)
                    yield Frame(index, elapsed, frame.convert("RGB"))
                    elapsed += (frame.info.get("duration") or 1000 / info.fps) / 1000
            return
        import av

        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            for index, frame in enumerate(container.decode(stream)):
                _within_probe(info, frame.width, frame.height, field)
                time = float(frame.time) if frame.time is not None else index / info.fps
                yield Frame(index, time, frame.to_image().convert("RGB"))
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt clip part-way through
        raise InvalidRequest(field, f"{field} could not be decoded: {type(exc).__name__}: {str(exc)[:200]}") from exc


def even_size(image: "Image.Image") -> "Image.Image":
    """H.264 in yuv420p needs even sides: an odd edge row/column is repeated, never cut."""
    if image.width % 2 == 0 and image.height % 2 == 0:
        return image
    from PIL import Image

    canvas = Image.new("RGB", (image.width + image.width % 2, image.height + image.height % 2))
    canvas.paste(image, (0, 0))
    if image.width % 2:
        canvas.paste(image.crop((image.width - 1, 0, image.width, image.height)), (image.width, 0))
    if image.height % 2:
        canvas.paste(canvas.crop((0, image.height - 1, canvas.width, image.height)), (0, image.height))
    return canvas


def _publish(tmp: Path, final: Path) -> Path:
    os.replace(tmp, final)
    return final


def write_mp4(frames: list["Image.Image"] | Iterator["Image.Image"], fps: float, path: Path, comment: str = "") -> Path:
    """H.264 MP4, yuv420p, with the infotext as the container's comment."""
    import av

    tmp = path.with_name(f".{path.name}.tmp")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w", format="mp4") as container:
        if comment:
            container.metadata["comment"] = comment
        stream = None
        for image in frames:
            image = even_size(image.convert("RGB"))
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = image.width, image.height, "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return _publish(tmp, path)


def write_animation(frames: Iterable["Image.Image"], fps: float, path: Path, fmt: str) -> Path:
    """A looping GIF or animated WebP. PIL writes a GIF from an iterator frame by frame; its WebP
    writer holds every frame (the caller bounds how many)."""
    tmp = path.with_name(f".{path.name}.tmp")
    duration = frame_duration_ms(fps, fmt)
    converted = (f.convert("RGB") for f in frames)
    first = next(converted)
    rest = list(converted) if fmt == "WEBP" else converted
    options = {"lossless": False, "quality": 90} if fmt == "WEBP" else {"optimize": False}
    first.save(tmp, format=fmt, save_all=True, append_images=rest, duration=duration, loop=0, **options)
    return _publish(tmp, path)


# The longest frame each format stores: GIF in hundredths of a second in 16 bits, WebP in ms in 24 bits.
MAX_FRAME_MS = {"GIF": 65_535 * 10, "WEBP": 2**24 - 1}


def frame_duration_ms(fps: float, fmt: str) -> int:
    """One frame's duration in ms at `fps`, within what `fmt` can store (so no rate makes the writer
    fail after a whole job; requests keep fps from 1 to 60, this guards every other caller)."""
    longest = MAX_FRAME_MS.get(fmt, MAX_FRAME_MS["GIF"])
    if not isinstance(fps, (int, float)) or math.isnan(fps) or fps <= 0:
        return longest
    return min(longest, max(1, round(1000 / fps)))


def write_zip(frame_paths: list[Path], path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for frame in frame_paths:
            archive.write(frame, frame.name)
    return _publish(tmp, path)


def save_frame(image: "Image.Image", path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    return _publish(tmp, path)
