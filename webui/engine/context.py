"""The Engine: the services a UI tab or an API route needs, handed in by webui/bootstrap.py.

Every piece of model work goes through `engine.jobs` (see core/jobs.py): a request becomes a job
with an owner, the one worker runs it in fair turns, and the caller waits for the result (or
reads its progress). The Engine imports no UI, HTTP or extension code; bootstrap builds the
registries and loads extensions into them before the Engine is made.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Generator

from webui.engine.core.devices import DeviceChoice, resolve_device
from webui.engine.core.fastpath import FastPathOptions
from webui.engine.core.jobs import KEEP_FINISHED, Job, JobStore
from webui.engine.core.results import ResultArchive
from webui.engine.core.specs import JobSpec
from webui.engine.registries import Registries
from webui.engine.models.catalog import Catalog
from webui.engine.models.manager import ModelManager
from webui.engine.settings import Settings

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

PRELOAD_OWNER = "kiri:preload"


__all__ = ["Engine", "Registries", "PRELOAD_OWNER"]


class Engine:
    """Catalog, models, samplers, add-ons and the job store; built once by webui/bootstrap.py."""

    def __init__(self, settings: Settings, registries: Registries | None = None, device: DeviceChoice | None = None,
                 extensions: Any = None):
        self.settings = settings
        registries = registries or Registries()
        self.samplers, self.hooks, self.addons = registries.samplers, registries.hooks, registries.addons
        self.job_kinds = registries.job_kinds
        self.prompt_steps = registries.prompt_steps  # styles, dynamic prompts (core/prompt_steps.py)
        self._loaders = dict(registries.loaders)  # handed to the model manager when it is made
        self.extensions = extensions  # what bootstrap loaded, for the Extensions tab and the API
        self.catalog = Catalog(settings.models_dir)
        for kind in registries.model_kinds:
            self.catalog.add_kind(kind)
        self.addons.catalog = self.catalog  # add-ons' checks by name (a LoRA's) before a job is queued
        # Finished results of jobs that came as plain data (a JobSpec: /kiri/v1/jobs, a worker) go to
        # outputs/<owner>/.jobs/<id>/ (core/results.py); a UI tab or /sdapi call takes its own result.
        archive = ResultArchive(self.outputs_for, KEEP_FINISHED, wants=lambda job: job.spec is not None)
        self.jobs = JobStore(archive, load_result=self._result_from_plain,
                             merge_limit=lambda: self.settings.batch_requests)
        self._device = device
        # The checkpoint asked for last (model picker, /options): what a request that names none uses,
        # even while another user's job has another model loaded for its batches.
        self.selected_model: str | None = None
        self._models: ModelManager | None = None
        self._models_lock = threading.Lock()
        # Where registered kinds run: None here, in this process. A dispatcher (webui/serve_ray: Ray Serve
        # replicas) has `work_for(engine, kind, request)` -> (request, work) or None to run it here; it sets
        # `jobs.workers` to its replicas. The engine never imports it.
        self.dispatcher: Any = None

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
                    fast_path=FastPathOptions(self.settings.fast_path, self.settings.compile_blocks,
                                              self.settings.fp8_weights, self.settings.attention_backend),
                )
                for kind, loader in self._loaders.items():
                    self._models.add_loader(kind, loader)
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

    def outputs_for(self, owner: str) -> "Path":
        """Where `owner`'s files go: outputs/<login>/ for a login, outputs/ without logins (core/owners.py)."""
        from webui.engine.core.owners import outputs_root

        return outputs_root(self.settings.outputs_dir, owner)

    def interrupt(self, owner: str | None = None) -> int:
        return self.jobs.interrupt(owner)

    def skip(self, owner: str | None = None) -> int:
        return self.jobs.skip(owner)

    # --- job kinds -------------------------------------------------------------------------
    def run_kind(self, kind: str, request: Any, job: Job | None = None) -> Any:
        """Run a request of a registered job kind and wait for its result (inline from a job)."""
        job = job or Job(kind=kind)
        request, work = self._work_for(kind, request)
        return self.run(job.owner, job.kind, work, job)

    def part_work(self, kind: str, request: Any) -> Callable[[Job], Any]:
        """The work of one part of a bigger job (an X/Y grid's cell, an SD upscale's tile), to run inside
        that job's work: `result = yield from work(job)`. Checked here, in the caller's thread. A dispatcher
        may run the part elsewhere (webui/serve_ray: on a free replica, a turn of its own), so the fair
        queue hands out the parts of a big job, not the whole job; without one, the kind's own work, here."""
        if self.job_kinds.get(kind) is None:
            raise KeyError(kind)
        part_for = getattr(self.dispatcher, "part_for", None)
        if part_for is not None:
            return part_for(self, kind, request)
        return self.job_kinds.work_for(self, kind, request)[1]

    def txt2img(self, request: Any, job: Job | None = None) -> Any:
        """Text to image (generation/), with a hires fix when asked (upscale/'s variant)."""
        return self.run_kind("txt2img", request, job or Job(kind="txt2img"))

    def img2img(self, request: Any, job: Job | None = None) -> Any:
        """Image to image, inpainting and outpainting (generation/img2img.py); SD upscale (upscale/)."""
        return self.run_kind("img2img", request, job or Job(kind="img2img"))

    def _work_for(self, kind: str, request: Any) -> tuple[Any, Callable]:
        from webui.engine.core.errors import InvalidRequest

        if self.job_kinds.get(kind) is None:
            raise InvalidRequest("kind", f"unknown job kind {kind!r}; one of {', '.join(self.job_kinds.names())}")
        if self.dispatcher is not None:
            dispatched = self.dispatcher.work_for(self, kind, request)
            if dispatched is not None:
                return dispatched
        return self.job_kinds.work_for(self, kind, request)

    def prepare_request(self, request):
        """The prompt steps first (styles merged in, templates checked: their errors refuse the request), then
        hooks (an extension may change the request), then validation, then the settings' add-on defaults."""
        self.prompt_steps.prepare(self.settings, request)
        request = self.hooks.transform("before_generate", request)
        request.validate()  # a hook may have changed it
        request.addons = self.addons.with_defaults(request.addons, self.settings)  # settings' add-ons, unless named
        # unknown add-ons and bad settings (the prompt's tags' too) refused before the job is queued
        self.addons.build(request.addons, getattr(request, "prompt", None), getattr(request, "negative_prompt", None))
        return request

    # --- jobs as plain data ----------------------------------------------------------------
    def request_types(self) -> dict[str, type]:
        """The job kinds a plain-data request can ask for, and the request class of each."""
        return {name: self.job_kinds.kinds[name].request_type for name in self.job_kinds.names()}

    def submit_plain(self, kind: str, data: dict, owner: str) -> Job:
        """Queue a job from plain data (what a remote client sends); returns at once. An internal kind (a
        piece of another kind's job, which a dispatcher sends through submit_spec) is refused."""
        from webui.engine.core.errors import InvalidRequest

        registered = self.job_kinds.get(kind)
        if registered is not None and registered.internal:
            raise InvalidRequest("kind", f"{kind!r} is a piece of another kind's job, not a job of its own; "
                                         f"one of {', '.join(self.job_kinds.names())}")
        return self.submit_spec(JobSpec(kind=kind, request=data, owner=owner))

    def submit_spec(self, spec: JobSpec | dict) -> Job:
        """Queue a job spec (core/specs.py; a decoded JSON object will do); returns the job at once, its
        id the spec's and `job.spec` the spec as plain data. A bad spec or request is refused before it
        is queued, naming the field."""
        from webui.engine.core.errors import InvalidRequest
        from webui.engine.core.plain import check_fields

        spec = spec if isinstance(spec, JobSpec) else JobSpec.from_plain(spec)
        kind, data = spec.kind, spec.request
        registered = self.job_kinds.get(kind)
        if registered is None:
            raise InvalidRequest("kind", f"unknown job kind {kind!r}; one of {', '.join(self.job_kinds.names())}")
        if not isinstance(data, dict):
            raise InvalidRequest("request", "request must be an object of the task's fields")
        if self.jobs.get(spec.id) is not None:
            raise InvalidRequest("id", f"a job with id {spec.id!r} exists already")
        check_fields(registered.request_type, data, kind)  # every kind, whatever its loader: a misspelt key is an error
        try:
            request = registered.request_from(data, self.settings.max_pixels)
        except TypeError as exc:
            raise InvalidRequest("request", f"not a {kind} request: {exc}") from exc
        _, work = self._work_for(kind, request)
        return self.submit(work, Job(kind=kind, owner=spec.owner, id=spec.id, spec=spec.plain()))

    def _result_from_plain(self, kind: str, record: Any) -> Any:
        """A result kept on disk (core/results.py), built back as its kind's result class when it names one."""
        from webui.engine.core.plain import load
        from webui.engine.core.results import inline_files

        registered = self.job_kinds.get(kind)
        if registered is None or registered.result_type is None:
            return record
        if callable(getattr(registered.result_type, "plain", None)):
            return record  # kept in the form it travels to clients (VideoResult.plain), not as its fields
        return load(registered.result_type, inline_files(record), self.settings.max_output_pixels)

    def preload(self) -> None:
        """Import torch and diffusers and load the default model, as a job; run in a background thread."""
        try:
            self.catalog.scan()
            self.load_model(None, owner=PRELOAD_OWNER)
            self.catalog.hash_all()  # big files the scan left unhashed, for the dropdown titles
        except Exception as exc:  # noqa: BLE001 - a failed preload is retried on first use
            log.warning("background model load did not finish: %s", exc)
