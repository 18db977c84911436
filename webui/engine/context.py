"""The Engine: the services a UI tab or an API route needs, handed in by webui/bootstrap.py.

Every piece of model work goes through `engine.jobs` (see core/jobs.py): a request becomes a job
with an owner, the one worker runs it in fair turns, and the caller waits for the result (or
reads its progress). The Engine imports no UI, HTTP or extension code; bootstrap builds the
registries and loads extensions into them before the Engine is made.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator

from webui.engine.core.devices import DeviceChoice, resolve_device
from webui.engine.core.hooks import Hooks
from webui.engine.core.job_kinds import JobKinds
from webui.engine.core.jobs import Job, JobStore
from webui.engine.generation.call import AddonRegistry
from webui.engine.generation.requests import GenerationResult, Txt2ImgRequest
from webui.engine.models.catalog import Catalog
from webui.engine.models.manager import ModelManager
from webui.engine.samplers.registry import SamplerRegistry
from webui.engine.settings import Settings

if TYPE_CHECKING:
    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.runner import Task

log = logging.getLogger(__name__)

PRELOAD_OWNER = "kiri:preload"


@dataclass
class Registries:
    """What built-ins and extensions register into, through the same calls."""

    samplers: SamplerRegistry = field(default_factory=SamplerRegistry)
    hooks: Hooks = field(default_factory=Hooks)
    addons: AddonRegistry = field(default_factory=AddonRegistry)
    job_kinds: JobKinds = field(default_factory=JobKinds)  # what POST /kiri/v1/jobs can ask for beyond txt2img/img2img


class Engine:
    """Catalog, models, samplers, add-ons and the job store; built once by webui/bootstrap.py."""

    def __init__(self, settings: Settings, registries: Registries | None = None, device: DeviceChoice | None = None,
                 extensions: Any = None):
        self.settings = settings
        registries = registries or Registries()
        self.samplers, self.hooks, self.addons = registries.samplers, registries.hooks, registries.addons
        self.job_kinds = registries.job_kinds
        self.extensions = extensions  # what bootstrap loaded, for the Extensions tab and the API
        self.catalog = Catalog(settings.models_dir)
        self.jobs = JobStore()
        self._device = device
        # The checkpoint asked for last (model picker, /options): what a request that names none uses,
        # even while another user's job has another model loaded for its batches.
        self.selected_model: str | None = None
        self._models: ModelManager | None = None
        self._models_lock = threading.Lock()

    # --- models ----------------------------------------------------------------------------
    @property
    def models(self) -> ModelManager:
        # Created on first use: resolving the device imports torch, which the first page does not need.
        with self._models_lock:
            if self._models is None:
                device = self._device or resolve_device(self.settings.device)
                self._models = ModelManager(
                    self.catalog, device, self.settings.allow_pickle, self.settings.model_cache_size,
                    on_loaded=lambda model: self.hooks.notify("on_model_loaded", model),
                    memory_budget=self.settings.model_memory_budget_mb * 2**20,
                )
                from webui.engine.upscale import load_upscaler_entry

                self._models.add_loader("upscaler", load_upscaler_entry)
            return self._models

    def models_if_created(self) -> ModelManager | None:
        return self._models

    def default_entry(self):
        return self.catalog.default_entry(self.settings.default_model)

    def current_entry(self):
        """The selected checkpoint's entry, else the loaded one's, else the one Kiri would load;
        never loads or imports torch."""
        if self.selected_model is not None:
            entry = self.catalog.find(self.selected_model)
            if entry is not None:
                return entry
        models = self._models
        return models.current.entry if models is not None and models.current is not None else self.default_entry()

    def load_model(self, name: str | None, owner: str = "local"):
        """Switch models as a job in the queue: waits its turn, keeps the previous model on failure."""
        return self.run(owner, "load", lambda job: self._load(name))

    def _load(self, name: str | None) -> Generator[None, None, Any]:
        loaded = self.models.get(name or self.selected_model, preferred=self.settings.default_model)
        self.selected_model = loaded.name
        return loaded
        yield  # noqa: unreachable - makes this a one-turn job

    def unload_models(self, owner: str = "local") -> None:
        self.run(owner, "unload", lambda job: self._unload())

    def _unload(self) -> Generator[None, None, None]:
        self.models.unload()
        return
        yield  # noqa: unreachable

    # --- jobs ------------------------------------------------------------------------------
    def run(self, owner: str, kind: str, work: Callable[[Job], Generator[None, None, Any]], job: Job | None = None) -> Any:
        """Run `work` as a job of `owner` and wait for its result; inline when called from a job."""
        job = job or Job(kind=kind, owner=owner)
        job.work = work
        return self.jobs.run(job)

    def submit(self, work: Callable[[Job], Generator[None, None, Any]], job: Job) -> Job:
        """Queue `work` as `job` and return at once; read job.status / job.result, or jobs.wait(job)."""
        job.work = work
        return self.jobs.submit(job)

    def interrupt(self, owner: str | None = None) -> int:
        return self.jobs.interrupt(owner)

    def skip(self, owner: str | None = None) -> int:
        return self.jobs.skip(owner)

    # --- generation ------------------------------------------------------------------------
    def txt2img(self, request: Txt2ImgRequest, job: Job | None = None) -> GenerationResult:
        job = job or Job(kind="txt2img")
        return self.run(job.owner, job.kind, self._work("txt2img", self.prepare_request(request)), job)

    def img2img(self, request: "Img2ImgRequest", job: Job | None = None) -> GenerationResult:
        """Image to image, inpainting and outpainting (see generation/img2img.py)."""
        job = job or Job(kind="img2img")
        return self.run(job.owner, job.kind, self._work("img2img", self.prepare_request(request)), job)

    def _work(self, kind: str, request) -> Callable[[Job], Generator[None, None, GenerationResult]]:
        """A prepared request's work for the job store; img2img's image and mask are prepared here, in
        the caller's thread, so a bad picture is refused before the job is queued."""
        if kind == "img2img" and getattr(request, "sd_upscale", None) is not None:
            from webui.engine.upscale import check_sd_upscale, sd_upscale_work

            check_sd_upscale(self, request)  # upscaler, picture and output size refused before the job is queued
            return lambda job: sd_upscale_work(self, request, job)
        if kind == "img2img":
            warnings: list[str] = []
            task = self.img2img_task(request, warnings)
            return lambda job: self._with_warnings(self.stage(task, job), warnings)
        if getattr(request, "hires", None) is not None:
            from webui.engine.upscale import check_hires, hires_work

            check_hires(self, request)  # an unknown hires upscaler is refused before the job is queued
            return lambda job: hires_work(self, request, job)
        from webui.engine.generation.txt2img import Txt2ImgTask

        return lambda job: self.stage(Txt2ImgTask(request), job)

    def img2img_task(self, request: "Img2ImgRequest", warnings: list[str]):
        """The task for an img2img request: the image and mask prepared (outside any turn)."""
        from webui.engine.generation.img2img import Img2ImgTask, check_pixels, prepare

        check_pixels(request.init_image, self.settings.max_pixels)
        if request.mask is not None:
            check_pixels(request.mask, self.settings.max_pixels, "mask")
        task = Img2ImgTask(request, prepare(request, warnings))
        if task.denoise_steps == 0:
            warnings.append("Denoising strength x steps is below one step: the init image is returned unchanged.")
        return task

    def stage(self, task: "Task", job: Job) -> Generator[None, None, GenerationResult]:
        """A denoising task as turns of `job`: the whole job, or one stage of a bigger one
        (`result = yield from engine.stage(task, job)` inside another job's work)."""
        from webui.engine.generation.runner import run

        return run(self, task, job)

    @staticmethod
    def _with_warnings(stage: Generator[None, None, GenerationResult], warnings: list[str]):
        result = yield from stage
        result.warnings[:0] = warnings
        return result

    def prepare_request(self, request):
        """Hooks first (an extension may change the request), then validation."""
        request = self.hooks.transform("before_generate", request)
        request.validate()  # a hook may have changed it
        return request

    # --- jobs as plain data ----------------------------------------------------------------
    def request_types(self) -> dict[str, type]:
        """The job kinds a plain-data request can ask for, and the request class of each."""
        from webui.engine.generation.img2img import Img2ImgRequest

        return {"txt2img": Txt2ImgRequest, "img2img": Img2ImgRequest,
                **{name: self.job_kinds.kinds[name].request_type for name in self.job_kinds.names()}}

    def submit_plain(self, kind: str, data: dict, owner: str) -> Job:
        """Queue a job from plain data (what a remote client or another process sends); returns at once."""
        from webui.engine.core.errors import InvalidRequest
        from webui.engine.core.plain import check_fields, load

        types = self.request_types()
        if kind not in types:
            raise InvalidRequest("kind", f"unknown job kind {kind!r}; one of {', '.join(types)}")
        if not isinstance(data, dict):
            raise InvalidRequest("request", "request must be an object of the task's fields")
        registered = self.job_kinds.get(kind)
        check_fields(types[kind], data, kind)  # every kind, whatever its loader: a misspelt key is an error
        try:
            if registered is not None:
                request = registered.request_from(data)
            else:
                request = self.prepare_request(load(types[kind], data, kind))
        except TypeError as exc:
            raise InvalidRequest("request", f"not a {kind} request: {exc}") from exc
        work = registered.work(self, request) if registered is not None else self._work(kind, request)
        return self.submit(work, Job(kind=kind, owner=owner))

    def preload(self) -> None:
        """Import torch and diffusers and load the default model, as a job; run in a background thread."""
        try:
            self.catalog.scan()
            self.load_model(None, owner=PRELOAD_OWNER)
            self.catalog.hash_all()  # big files the scan left unhashed, for the dropdown titles
        except Exception as exc:  # noqa: BLE001 - a failed preload is retried on first use
            log.warning("background model load did not finish: %s", exc)
