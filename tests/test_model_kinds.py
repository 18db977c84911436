"""One catalog and one manager for every kind of model, with a memory budget shared between kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from webui.engine.core.devices import DeviceChoice
from webui.engine.core.errors import ModelLoadError, ModelNotFound, PickleRefused
from webui.engine.models.catalog import Catalog, ModelKind
from webui.engine.models.manager import ModelManager


def _file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def test_every_kind_is_scanned_in_kiris_and_a1111s_folders(tmp_path):
    _file(tmp_path / "upscalers" / "4x-tiny.safetensors", 10)
    _file(tmp_path / "ESRGAN" / "4x-old.pth", 10)
    _file(tmp_path / "Lora" / "style.safetensors", 10)
    _file(tmp_path / "VAE" / "vae-ft-mse.safetensors", 10)
    (tmp_path / "segmentation" / "clipseg").mkdir(parents=True)
    (tmp_path / "segmentation" / "clipseg" / "config.json").write_text("{}")
    _file(tmp_path / "motion" / "notes.txt", 3)  # not a model
    catalog = Catalog(tmp_path)
    catalog.scan()
    names = {kind: [e.name for e in catalog.of_kind(kind)] for kind in catalog.kinds}
    assert names["upscaler"] == ["4x-tiny", "4x-old"] and names["lora"] == ["style"] and names["vae"] == ["vae-ft-mse"]
    assert names["segmenter"] == ["clipseg"] and names["motion"] == [] and names["checkpoint"] == []
    assert catalog.find_of_kind("upscaler", "4x-old").format == "pickle"


def test_a_capability_adds_a_kind_and_a_loader_sharing_the_budget(tmp_path):
    for name in ("a", "b", "c"):
        _file(tmp_path / "widgets" / f"{name}.safetensors", 400)
    catalog = Catalog(tmp_path)
    catalog.add_kind(ModelKind("widget", ("widgets",)))
    catalog.scan()
    manager = ModelManager(catalog, DeviceChoice("cpu"), memory_budget=1000)
    with pytest.raises(ModelLoadError, match="cannot load widget"):
        manager.get_of_kind("widget", "a")
    loads = []
    manager.add_loader("widget", lambda entry, device, allow_pickle: loads.append(entry.name) or {"weights": entry.name})
    assert manager.get_of_kind("widget", "a").model == {"weights": "a"}
    manager.get_of_kind("widget", "b")
    assert manager.get_of_kind("widget", "a").model == {"weights": "a"}  # cached: no second load
    manager.get_of_kind("widget", "c")  # 1200 bytes would be over the budget: the least recently used goes
    assert [e.name for e in manager.loaded()] == ["a", "c"] and manager.loaded_bytes() <= 1000
    assert loads == ["a", "b", "c"]
    with pytest.raises(ModelNotFound, match="available: a, b, c"):
        manager.get_of_kind("widget", "zzz")


def test_pickles_of_any_kind_are_refused_without_the_flag(tmp_path):
    _file(tmp_path / "upscalers" / "old.pth", 10)
    catalog = Catalog(tmp_path)
    catalog.scan()
    manager = ModelManager(catalog, DeviceChoice("cpu"))
    manager.add_loader("upscaler", lambda entry, device, allow_pickle: object())
    with pytest.raises(PickleRefused):
        manager.get_of_kind("upscaler", "old")
