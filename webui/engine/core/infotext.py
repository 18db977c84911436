"""AUTOMATIC1111-compatible infotext: the generation parameters stored inside images.

The text format (see DESIGN.md section 1) is what other tools read and write, so both the
writer and the parser follow AUTOMATIC1111's rules rather than anything of Kiri's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from PIL import Image
from PIL.PngImagePlugin import PngInfo

__all__ = [
    "Infotext",
    "KEY_ORDER",
    "build_infotext",
    "parse_infotext",
    "infotext_to_request_fields",
    "read_infotext",
    "pnginfo_for",
    "exif_for",
    "encode_user_comment",
    "decode_user_comment",
]

#: Keys AUTOMATIC1111 writes first, in its order; other keys follow as given, "Version" last.
KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Size",
    "Processing size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Denoising strength",
    "Clip skip",
)

_NEGATIVE_PREFIX = "Negative prompt:"

# Same shape as AUTOMATIC1111's parser: a key of word characters, spaces, '-' and '/', then a
# JSON-quoted value or anything up to the next comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")

# EXIF tags: the Exif sub-IFD pointer and its UserComment entry.
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\0"
_ASCII_PREFIX = b"ASCII\0\0\0"
_JIS_PREFIX = b"JIS\0\0\0\0\0"
# What piexif.load may be handed: EXIF with its "Exif\0\0" header, or a bare TIFF block. Any other
# bytes piexif takes for a FILE NAME and opens, so a WebP whose EXIF chunk says "/etc/passwd"
# would make it read a server file: such blocks are never passed to it.
_EXIF_STARTS = (b"Exif\0\0", b"II*\0", b"MM\0*")


@dataclass
class Infotext:
    """A parsed infotext; params keeps every key (known or not) with its unquoted value."""

    prompt: str
    negative_prompt: str
    params: dict[str, str] = field(default_factory=dict)


def _format_value(value: object) -> str:
    """Write numbers the way people type them (7.0 -> "7") and quote values that hold separators."""
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else format(value, ".12g")
    else:
        text = str(value)
    if "," in text or ":" in text or "\n" in text:
        # ensure_ascii=False as AUTOMATIC1111 does, so non-latin prompts stay readable.
        return json.dumps(text, ensure_ascii=False)
    return text


def _ordered_keys(params: Mapping[str, object]) -> list[str]:
    """AUTOMATIC1111's key order, so Kiri's infotexts diff cleanly against theirs."""
    known = [key for key in KEY_ORDER if key in params]
    rest = [key for key in params if key not in KEY_ORDER and key != "Version"]
    tail = ["Version"] if "Version" in params else []
    return known + rest + tail


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Render AUTOMATIC1111's `parameters` text: prompt, optional negative line, params line.

    Raises ValueError for a key holding ',', ':' or a newline, since no parser could read it back.
    """
    pairs: list[str] = []
    for key in _ordered_keys(params):
        value = params[key]
        if value is None or (isinstance(value, str) and value == ""):
            continue
        if any(ch in key for ch in ",:\n\r"):
            raise ValueError(f"infotext key {key!r} must not contain ',', ':' or a newline")
        pairs.append(f"{key}: {_format_value(value)}")

    text = prompt or ""
    if negative_prompt:
        text += f"\n{_NEGATIVE_PREFIX} {negative_prompt}"
    if pairs:
        text += "\n" + ", ".join(pairs)
    return text.strip()


def _unquote(value: str) -> str:
    """Undo the JSON quoting of the writer; a malformed quote is kept verbatim rather than lost."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def parse_infotext(text: str) -> Infotext:
    """Split an infotext into prompt, negative prompt and params, as AUTOMATIC1111 does.

    The last line counts as the params line only when it holds at least three `Key: value`
    pairs (so a prompt such as "(smile:1.2)" is not mistaken for one) and is not itself the
    negative prompt line. Unknown keys are kept; a later duplicate key wins.
    """
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    params: dict[str, str] = {}
    last = lines[-1]
    if (
        len(_PARAM_RE.findall(last)) >= 3
        and not last.lstrip().startswith(_NEGATIVE_PREFIX)
    ):
        lines = lines[:-1]
        for key, value in _PARAM_RE.findall(last):
            params[key.strip()] = _unquote(value.strip())

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        stripped = line.strip()
        if not in_negative and stripped.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            stripped = stripped[len(_NEGATIVE_PREFIX):].strip()
        (negative_lines if in_negative else prompt_lines).append(stripped)

    return Infotext(
        prompt="\n".join(prompt_lines).strip(),
        negative_prompt="\n".join(negative_lines).strip(),
        params=params,
    )


def _to_int(value: str) -> int | None:
    """Lenient int: infotexts from other tools sometimes write "20.0"."""
    try:
        return int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            return None
        return int(as_float) if as_float.is_integer() else None


def _to_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def infotext_to_request_fields(info: Infotext) -> dict[str, object]:
    """Map a parsed infotext onto /sdapi/v1 request fields; unreadable values are skipped, not fatal."""
    fields: dict[str, object] = {}
    if info.prompt:
        fields["prompt"] = info.prompt
    if info.negative_prompt:
        fields["negative_prompt"] = info.negative_prompt
    p = info.params

    if "Steps" in p and (steps := _to_int(p["Steps"])) is not None:
        fields["steps"] = steps
    if p.get("Sampler"):
        fields["sampler_name"] = p["Sampler"]
    if p.get("Schedule type"):
        fields["scheduler"] = p["Schedule type"]
    if "CFG scale" in p and (cfg := _to_float(p["CFG scale"])) is not None:
        fields["cfg_scale"] = cfg
    if "Seed" in p and (seed := _to_int(p["Seed"])) is not None:
        fields["seed"] = seed
    # "Processing size": the size denoised when the saved picture's ("Size") differs (inpaint "only masked",
    # outpaint): the request's width and height.
    for key in ("Size", "Processing size"):
        if key in p and (size := _SIZE_RE.match(p[key])):
            fields["width"] = int(size.group(1))
            fields["height"] = int(size.group(2))
    if "Denoising strength" in p and (strength := _to_float(p["Denoising strength"])) is not None:
        fields["denoising_strength"] = strength
    if "Clip skip" in p and (clip := _to_int(p["Clip skip"])) is not None:
        fields["clip_skip"] = clip
    return fields


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment bytes as piexif writes them for AUTOMATIC1111: "UNICODE\\0" + UTF-16BE.

    A character UTF-16 cannot hold (a lone surrogate) becomes "?" rather than failing the save.
    """
    import piexif.helper

    return piexif.helper.UserComment.dump(text, encoding="unicode")


def decode_user_comment(raw: object) -> str:
    """Read a UserComment whatever character code its 8-byte prefix names.

    Lenient where piexif's own reader is strict (little-endian UTF-16 from Windows tools, UTF-8
    behind the ASCII prefix); a value that is not text at all (an int, a float, a tuple of
    numbers, as some writers store the tag with the wrong type) gives "" instead of an error.
    """
    if isinstance(raw, str):
        return raw.rstrip("\0")
    if isinstance(raw, (tuple, list)):
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in raw):
            return ""
        raw = bytes(raw)  # the tag stored as BYTE: piexif and PIL give a tuple of ints
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        return ""
    prefix, payload = raw[:8], raw[8:]
    if prefix == _UNICODE_PREFIX:
        if payload.startswith(b"\xfe\xff"):
            text = payload[2:].decode("utf-16-be", errors="replace")
        elif payload.startswith(b"\xff\xfe"):
            text = payload[2:].decode("utf-16-le", errors="replace")
        elif len(payload) >= 2 and payload[0] != 0 and payload[1] == 0:
            # No BOM, but "A\0" shape: some Windows tools write little-endian.
            text = payload.decode("utf-16-le", errors="replace")
        else:
            text = payload.decode("utf-16-be", errors="replace")
    elif prefix == _ASCII_PREFIX:
        # Many writers put UTF-8 behind the ASCII prefix; UTF-8 reads true ASCII unchanged.
        text = payload.decode("utf-8", errors="replace")
    elif prefix == _JIS_PREFIX:
        text = payload.decode("shift_jis", errors="replace")
    elif prefix == b"\0" * 8:
        text = payload.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def _exif_user_comment(image: Image.Image) -> object:
    """The raw UserComment value from the image's EXIF, read with piexif; None if there is none.

    Only metadata is read: the EXIF bytes PIL found while opening (JPEG APP1, WebP EXIF, PNG
    eXIf), else PIL's tag directory (TIFF), never the pixels.
    """
    import piexif

    raw = (image.info or {}).get("exif")
    if isinstance(raw, (bytes, bytearray)) and raw:
        raw = bytes(raw)
        if raw.startswith(_EXIF_STARTS):
            try:
                return piexif.load(raw).get("Exif", {}).get(piexif.ExifIFD.UserComment)
            except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the image from being used
                return None
    try:
        # Image.getexif itself, not PngImageFile's, which decodes the pixels looking for eXIf after them.
        return Image.Image.getexif(image).get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:  # noqa: BLE001
        return None


def read_infotext(image: Image.Image) -> str | None:
    """The infotext stored in an image: PNG `parameters` chunk, else EXIF UserComment.

    Reads metadata only, so an image opened lazily (Image.open without load()) stays undecoded;
    text chunks PNG writers put after the pixel data are not seen (AUTOMATIC1111 and Kiri write
    them before it).
    """
    value = (image.info or {}).get("parameters")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value:
        return value

    comment = _exif_user_comment(image)
    if comment is None:
        return None
    text = decode_user_comment(comment)
    return text or None


def pnginfo_for(infotext: str) -> PngInfo:
    """PNG text chunks carrying the infotext; PIL picks iTXt itself when text is not latin-1."""
    info = PngInfo()
    info.add_text("parameters", infotext)
    return info


def exif_for(infotext: str) -> bytes:
    """An EXIF block (with `Exif\\0\\0` header) holding only UserComment, for JPEG/WebP saving.

    Written by piexif, as AUTOMATIC1111 does: the tag's type is UNDEFINED, which piexif (and so
    AUTOMATIC1111's PNG Info) reads back as bytes. PIL's own Exif writer would store it as BYTE.
    """
    import piexif

    return piexif.dump({"Exif": {piexif.ExifIFD.UserComment: encode_user_comment(infotext)}})
