"""Infotext must read and write exactly what AUTOMATIC1111 does, or pasted parameters break."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from webui.engine.core.infotext import (
    Infotext,
    build_infotext,
    decode_user_comment,
    encode_user_comment,
    exif_for,
    infotext_to_request_fields,
    parse_infotext,
    pnginfo_for,
    read_infotext,
)

A1111_TEXT = (
    "masterpiece, best quality, 1girl, (smile:1.2), looking at viewer\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3658125236, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
    'Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", '
    "Version: v1.10.1"
)


def test_parse_real_a1111_text() -> None:
    info = parse_infotext(A1111_TEXT)
    assert info.prompt == "masterpiece, best quality, 1girl, (smile:1.2), looking at viewer"
    assert info.negative_prompt == "lowres, bad anatomy, (worst quality:1.4)"
    assert info.params == {
        "Steps": "28",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "7",
        "Seed": "3658125236",
        "Size": "512x768",
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "Denoising strength": "0.45",
        "Clip skip": "2",
        "Hires upscale": "2",
        "Hires upscaler": "Latent",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "Version": "v1.10.1",
    }
    assert list(info.params)[0] == "Steps" and list(info.params)[-1] == "Version"


def test_rebuild_real_a1111_text_is_identical() -> None:
    info = parse_infotext(A1111_TEXT)
    assert build_infotext(info.prompt, info.negative_prompt, info.params) == A1111_TEXT


def test_request_fields_from_a1111_text() -> None:
    fields = infotext_to_request_fields(parse_infotext(A1111_TEXT))
    assert fields == {
        "prompt": "masterpiece, best quality, 1girl, (smile:1.2), looking at viewer",
        "negative_prompt": "lowres, bad anatomy, (worst quality:1.4)",
        "steps": 28,
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "cfg_scale": 7.0,
        "seed": 3658125236,
        "width": 512,
        "height": 768,
        "denoising_strength": 0.45,
        "clip_skip": 2,
    }


def test_request_fields_only_present_and_tolerant() -> None:
    info = Infotext("a cat", "", {"Steps": "20.0", "Sampler": "DPM++ 2M Karras", "Seed": "abc"})
    assert infotext_to_request_fields(info) == {
        "prompt": "a cat",
        "steps": 20,
        "sampler_name": "DPM++ 2M Karras",
    }


@pytest.mark.parametrize(
    ("prompt", "negative", "params"),
    [
        ("a cat", "", {"Steps": 20, "Sampler": "Euler a", "Seed": 1}),
        (
            "line one, (detail:1.3)\nline two\n\nline four",
            "blurry\nlowres, jpeg artifacts",
            {"Steps": 30, "CFG scale": 6.5, "Seed": -1, "Size": "768x512"},
        ),
        (
            "猫, ünïcode",
            "bad",
            {
                "Steps": 20,
                "Sampler": "DPM++ 2M",
                "Lora hashes": "a: 1, b: 2",
                "Note": 'has "quotes", and\na newline',
                "Path": "C:\\models\\x.safetensors",
                "Kiri version": "0.1.0",
            },
        ),
    ],
)
def test_round_trip(prompt: str, negative: str, params: dict[str, object]) -> None:
    text = build_infotext(prompt, negative, params)
    info = parse_infotext(text)
    assert info.prompt == prompt
    assert info.negative_prompt == negative
    assert info.params == {k: build_value(v) for k, v in params.items()}


def build_value(value: object) -> str:
    """What a value reads back as: its text, floats compact."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_build_layout_and_quoting() -> None:
    text = build_infotext(
        "a cat",
        "",
        {"Seed": 5, "Steps": 20, "Lora hashes": "x: 1", "Empty": "", "Gone": None, "CFG scale": 7.0},
    )
    assert text == 'a cat\nSteps: 20, CFG scale: 7, Seed: 5, Lora hashes: "x: 1"'
    assert "Negative prompt" not in text


def test_key_order() -> None:
    params = {
        "Version": "v1",
        "Hires upscale": 2,
        "Clip skip": 2,
        "Denoising strength": 0.75,
        "Variation seed strength": 0.1,
        "Variation seed": 9,
        "VAE": "vae",
        "VAE hash": "abc",
        "Model": "m",
        "Model hash": "0123456789",
        "Size": "512x512",
        "Seed": 1,
        "Image CFG scale": 1.5,
        "CFG scale": 7,
        "Schedule type": "Karras",
        "Sampler": "Euler",
        "Steps": 20,
        "Lora hashes": "l",
    }
    keys = list(parse_infotext(build_infotext("p", "", params)).params)
    assert keys == [
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Image CFG scale",
        "Seed",
        "Size",
        "Model hash",
        "Model",
        "VAE hash",
        "VAE",
        "Variation seed",
        "Variation seed strength",
        "Denoising strength",
        "Clip skip",
        "Hires upscale",
        "Lora hashes",
        "Version",
    ]
    assert "Denoising strength: 0.75" in build_infotext("p", "", params)


def test_bad_key_rejected() -> None:
    with pytest.raises(ValueError):
        build_infotext("p", "", {"Bad: key": 1})


def test_prompt_only_text() -> None:
    info = parse_infotext("masterpiece, best quality, (smile:1.2), a: b\nsecond line")
    assert info.prompt == "masterpiece, best quality, (smile:1.2), a: b\nsecond line"
    assert info.negative_prompt == ""
    assert info.params == {}


def test_prompt_and_negative_without_params() -> None:
    info = parse_infotext("a cat\nNegative prompt: x: 1, y: 2, z: 3")
    assert info.prompt == "a cat"
    assert info.negative_prompt == "x: 1, y: 2, z: 3"
    assert info.params == {}


def test_params_line_needs_three_pairs() -> None:
    info = parse_infotext("a cat\nSteps: 20, Seed: 1")
    assert info.prompt == "a cat\nSteps: 20, Seed: 1"
    assert info.params == {}


def test_unknown_keys_kept() -> None:
    info = parse_infotext(
        'p\nSteps: 4, Foo bar: baz, ADetailer model: face_yolov8n.pt, Weird/key-name: "q, r", Seed: 3'
    )
    assert info.params["Foo bar"] == "baz"
    assert info.params["ADetailer model"] == "face_yolov8n.pt"
    assert info.params["Weird/key-name"] == "q, r"
    assert info.params["Seed"] == "3"


def test_crlf_and_empty() -> None:
    info = parse_infotext("a\r\nb\r\nNegative prompt: n\r\nSteps: 1, Seed: 2, Size: 64x64")
    assert (info.prompt, info.negative_prompt) == ("a\nb", "n")
    assert info.params["Size"] == "64x64"
    assert parse_infotext("") == Infotext("", "", {})


def test_user_comment_prefixes() -> None:
    text = "Steps: 20, 猫"
    assert decode_user_comment(encode_user_comment(text)) == text
    assert decode_user_comment(b"UNICODE\0" + text.encode("utf-16-le")) == text
    assert decode_user_comment(b"ASCII\0\0\0hello\0") == "hello"
    assert decode_user_comment("plain") == "plain"


def _reopen(image: Image.Image, **save: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, **save)
    buffer.seek(0)
    return Image.open(buffer)


def test_png_round_trip_in_memory() -> None:
    image = _reopen(Image.new("RGB", (8, 8)), format="PNG", pnginfo=pnginfo_for(A1111_TEXT))
    assert read_infotext(image) == A1111_TEXT
    unicode_text = "猫\nNegative prompt: ü\nSteps: 1, Seed: 2, Size: 8x8"
    image = _reopen(Image.new("RGB", (8, 8)), format="PNG", pnginfo=pnginfo_for(unicode_text))
    assert read_infotext(image) == unicode_text


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_round_trip_in_memory(fmt: str) -> None:
    image = _reopen(Image.new("RGB", (8, 8)), format=fmt, exif=exif_for(A1111_TEXT))
    assert read_infotext(image) == A1111_TEXT


def test_exif_user_comment_is_undefined_type() -> None:
    """piexif (AUTOMATIC1111's reader) only decodes UserComment stored as UNDEFINED (7)."""
    tiff = exif_for("abc")[6:]
    assert tiff[:4] == b"MM\x00\x2a"
    (exif_ifd,) = struct.unpack(">I", tiff[8 + 2 + 8 : 8 + 2 + 12])
    tag, typ, count, offset = struct.unpack(">HHII", tiff[exif_ifd + 2 : exif_ifd + 14])
    assert (tag, typ) == (0x9286, 7)
    assert tiff[offset : offset + count] == b"UNICODE\0" + "abc".encode("utf-16-be")


def test_no_infotext() -> None:
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="PNG")) is None
    assert read_infotext(_reopen(Image.new("RGB", (8, 8)), format="JPEG")) is None
    assert read_infotext(Image.new("RGB", (8, 8))) is None
