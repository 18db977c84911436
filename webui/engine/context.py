"""The Engine: the services a UI tab or an API route needs, passed in rather than imported as globals."""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from .catalog import Catalog
from .devices import DeviceChoice, resolve_device
from .jobs import Job, JobBoard
from .queue import FairGate
from .models import ModelManager
from .requests import Txt2ImgRequest
from .hooks import Hooks
from .samplers import SamplerRegistry
from .txt2img import GenerationResult, txt2img

log = logging.getLogger(__name__)

BUILTIN_EXTENSIONS = Path(__file__).resolve().parent.parent / "builtin_extensions"


@dataclass
class Settings:
    """What the user can change on the Settings tab; saved as JSON between runs."""

    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    device: str = "auto"
    allow_pickle: bool = False
    model_cache_size: int = 1  # loaded models kept in memory (LRU)
    default_model: str | None = None
    save_images: bool = True
    image_format: str = "png"
    preview_every: int = 5  # live preview every N steps; 0 turns previews off
    extensions_dir: Path | None = None  # user extensions; None: only the built-in ones
    disabled_extensions: list[str] = field(default_factory=list)
    allow_extension_install: bool = False  # set by launch.py from --listen/--share and the insecure flag
    max_pixels: int = 4096 * 4096  # bigger init images for Image to image are refused

    EDITABLE = ("model_cache_size", "default_model", "save_images", "image_format", "disabled_extensions", "preview_every")

    def extensions_dirs(self) -> list[tuple[Path, str]]:
        dirs = [(BUILTIN_EXTENSIONS, "built-in")]
        if self.extensions_dir is not None:
            dirs.append((Path(self.extensions_dir), "user"))
        return dirs

    def editable(self) -> dict:
        return {k: getattr(self, k) for k in self.EDITABLE}

    def save(self, path: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k in self.EDITABLE}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    def load_saved(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        names = {f.name for f in fields(self)}
        for key, value in data.items():
            if key in self.EDITABLE and key in names:
                setattr(self, key, value)


class Engine:
    """Catalog, models, samplers and jobs; built once by launch.py (or a test) and shared."""

    def __init__(self, settings: Settings, device: DeviceChoice | None = None):
        self.settings = settings
        self.catalog = Catalog(settings.models_dir)
        self.samplers = SamplerRegistry()
        self.hooks = Hooks()
        # Built-in samplers, then extensions, all through the same loader and registries.
        from webui.extensions import ExtensionManager

        self.extensions = ExtensionManager(self.samplers, self.hooks)
        self.extensions.load_all(settings.extensions_dirs(), set(settings.disabled_extensions))
        self.jobs = JobBoard()
        self.gate = FairGate()
        self._device = device
        self._models: ModelManager | None = None
        self._models_lock = threading.Lock()

    @property
    def models(self) -> ModelManager:
        # Created on first use: resolving the device imports torch, which the first page does not need.
        with self._models_lock:
            if self._models is None:
                device = self._device or resolve_device(self.settings.device)
                self._models = ModelManager(
                    self.catalog, device, self.settings.allow_pickle, self.settings.model_cache_size,
                    on_loaded=lambda model: self.hooks.notify("on_model_loaded", model),
                )
            return self._models

    @contextmanager
    def turn(self, owner: str) -> Iterator[None]:
        """A fair turn on the model (see queue.FairGate), holding the model lock meanwhile."""
        with self.gate.turn(owner), self.models.lock:
            yield

    def load_model(self, name: str | None, owner: str = "local"):
        """Switch models in turn: waits for running batches, keeps the previous model on failure."""
        with self.turn(owner):
            return self.models.get(name, preferred=self.settings.default_model)

    def models_if_created(self) -> ModelManager | None:
        return self._models

    def default_entry(self):
        return self.catalog.default_entry(self.settings.default_model)

    def current_entry(self):
        """The loaded model's entry, else the one Kiri would load; never loads or imports torch."""
        models = self._models
        return models.current.entry if models is not None and models.current is not None else self.default_entry()

    def txt2img(self, request: Txt2ImgRequest, job: Job | None = None) -> GenerationResult:
        job = job or Job(kind="txt2img")
        request = self.hooks.transform("before_generate", request)
        request.validate()  # a hook may have changed it
        self.jobs.add(job)
        try:
            return txt2img(self, request, job)
        finally:
            self.jobs.remove(job)

    def img2img(self, request, job: Job | None = None) -> GenerationResult:
        """Image to image, inpainting and outpainting (see img2img.py), with the same hooks and jobs."""
        from .img2img import img2img

        job = job or Job(kind="img2img")
        request = self.hooks.transform("before_generate", request)
        request.validate()
        self.jobs.add(job)
        try:
            return img2img(self, request, job)
        finally:
            self.jobs.remove(job)

    def interrupt(self, owner: str | None = None) -> int:
        return self.jobs.interrupt(owner)

    def preload(self) -> None:
        """Import torch and diffusers and load the default model; run in a background thread."""
        try:
            self.catalog.scan()
            self.models.get(None, preferred=self.settings.default_model)
            self.catalog.hash_all()  # big files the scan left unhashed, for the dropdown titles
        except Exception as exc:  # noqa: BLE001 - a failed preload is retried on first use
            log.warning("background model load did not finish: %s", exc)
