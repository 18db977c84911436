"""Saved images must be numbered like AUTOMATIC1111's, appear whole, and carry their infotext."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from webui.engine.core import outputs
from webui.engine.core.infotext import parse_infotext, read_infotext
from webui.engine.core.outputs import dated_dir, save_image

INFOTEXT = (
    "a cat, (fluffy:1.2)\nsecond line 猫\nNegative prompt: blurry\n"
    'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 16x16, Lora hashes: "a: 1, b: 2"'
)


def _image() -> Image.Image:
    return Image.new("RGB", (16, 16), (200, 30, 30))


def test_dated_dir() -> None:
    assert dated_dir(Path("/out"), "txt2img-images", datetime(2024, 3, 9, 23, 59)) == Path(
        "/out/txt2img-images/2024-03-09"
    )
    assert dated_dir(Path("/out"), "x").parent == Path("/out/x")


def test_numbering_starts_and_continues(tmp_path: Path) -> None:
    target = tmp_path / "new" / "nested"
    first = save_image(_image(), target, INFOTEXT, 1234)
    assert first == target / "00000-1234.png"
    second = save_image(_image(), target, INFOTEXT, 99)
    assert second.name == "00001-99.png"


def test_existing_numbers_continue(tmp_path: Path) -> None:
    (tmp_path / "00007-1.png").write_bytes(b"x")
    (tmp_path / "00012-5.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "grid-0003.png").write_bytes(b"x")
    saved = save_image(_image(), tmp_path, INFOTEXT, 42)
    assert saved.name == "00013-42.png"


def test_no_temp_files_left(tmp_path: Path) -> None:
    for seed in range(3):
        save_image(_image(), tmp_path, INFOTEXT, seed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-0.png", "00001-1.png", "00002-2.png"]


def test_failed_encode_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(outputs, "_encode", broken)
    with pytest.raises(RuntimeError):
        save_image(_image(), tmp_path, INFOTEXT, 1)
    assert list(tmp_path.iterdir()) == []


def test_taken_name_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process may take the name between our scan and our publish; never overwrite it."""
    real_next = outputs.next_sequence_number
    calls = {"n": 0}

    def stale_scan(directory: Path) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            (directory / "00000-7.png").write_bytes(b"someone else's")
        return 0 if calls["n"] == 1 else real_next(directory)

    monkeypatch.setattr(outputs, "next_sequence_number", stale_scan)
    saved = save_image(_image(), tmp_path, INFOTEXT, 7)
    assert saved.name == "00001-7.png"
    assert (tmp_path / "00000-7.png").read_bytes() == b"someone else's"


def test_threads_get_distinct_numbers(tmp_path: Path) -> None:
    results: list[Path] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        path = save_image(_image(), tmp_path, INFOTEXT, seed)
        with lock:
            results.append(path)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(int(p.name.split("-")[0]) for p in results)
    assert numbers == list(range(8))
    assert len(list(tmp_path.iterdir())) == 8


@pytest.mark.parametrize("extension", ["png", "jpg", "jpeg", "webp", ".PNG"])
def test_infotext_round_trip(tmp_path: Path, extension: str) -> None:
    path = save_image(Image.new("RGBA", (16, 16), (1, 2, 3, 128)), tmp_path, INFOTEXT, 1234, extension)
    assert path.suffix == "." + extension.lower().lstrip(".")
    with Image.open(path) as image:
        assert read_infotext(image) == INFOTEXT
        assert image.size == (16, 16)
    info = parse_infotext(INFOTEXT)
    assert info.params["Lora hashes"] == "a: 1, b: 2"


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_image(_image(), tmp_path, INFOTEXT, 1, "bmp")
