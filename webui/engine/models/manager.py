"""Loading models of every kind, with one LRU cache and one memory budget shared between them.

Checkpoints load with diffusers (below); other kinds (upscalers, segmenters, motion modules, ...)
load through the loader their capability registers with `add_loader(kind, loader)`. All of it
runs on the job store's worker, so switching models waits for the running batch. A load that
fails leaves the previous model loaded.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from webui.engine.models import quant, sd3_file
from webui.engine.models.catalog import Catalog, CatalogEntry
from webui.engine.core.addons import derived_bytes
from webui.engine.core import memory
from webui.engine.core import fastpath
from webui.engine.core.devices import DeviceChoice, DtypePlan, free_memory
from webui.engine.core.errors import ModelLoadError, ModelNotFound, PickleRefused
from webui.engine.models.families import CUSTOM_SIGMA_FAMILIES, FAMILIES, UnknownFamily, family_from_keys, prediction_from_config

log = logging.getLogger(__name__)

# Pipeline class per family for single files, and the hub repo holding its diffusers config
# (used only when models/configs/<family>/ is missing, i.e. on a machine with internet).
SINGLE_FILE_PIPELINES = {
    "sd1": ("StableDiffusionPipeline", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sd2": ("StableDiffusionPipeline", "stabilityai/stable-diffusion-2-1"),
    "sdxl": ("StableDiffusionXLPipeline", "stabilityai/stable-diffusion-xl-base-1.0"),
    "sd3": ("StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "flux": ("FluxPipeline", "black-forest-labs/FLUX.1-dev"),
}


@dataclass
class LoadedThing:
    """A loaded model of a kind other than checkpoint: what its capability's loader returned."""

    entry: CatalogEntry
    model: Any
    device: str

    @property
    def name(self) -> str:
        return self.entry.name


# (entry, device choice, allow_pickle) -> the loaded object; raises ModelLoadError with a reason.
Loader = Callable[[CatalogEntry, DeviceChoice, bool], Any]


@dataclass
class LoadedModel:
    entry: CatalogEntry
    pipeline: Any
    family: str
    prediction: str
    sha256: str
    device: str
    dtypes: DtypePlan | None = None  # what each component was loaded in (core.devices.dtype_policy)
    fast_path: fastpath.FastPathPlan | None = None  # the speed switches it got, as applied (core/fastpath.py)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def custom_sigmas(self) -> bool:
        """Whether its pipeline hands the scheduler sigmas of its own (Flux): samplers must take them."""
        return self.family in CUSTOM_SIGMA_FAMILIES

    @property
    def base_scheduler_config(self) -> dict:
        return dict(self._base_config)

    def __post_init__(self) -> None:
        # Samplers are built from the checkpoint's own scheduler config, kept before any swap.
        self._base_config = dict(self.pipeline.scheduler.config)
        # What capabilities derive from this model once and reuse (the preview decoder, ...),
        # dropped with the model; kept here so the models layer needs to know none of them.
        self.derived: dict[str, Any] = {}


class ModelManager:
    def __init__(
        self,
        catalog: Catalog,
        device: DeviceChoice,
        allow_pickle: bool = False,
        cache_size: int = 1,
        on_loaded: Callable[[LoadedModel], None] | None = None,
        memory_budget: int = 0,
        fast_path: fastpath.FastPathOptions = fastpath.FastPathOptions(),
    ):
        self.catalog = catalog
        self.device = device
        self.allow_pickle = allow_pickle
        self.cache_size = max(1, cache_size)
        self.memory_budget = memory_budget  # bytes for everything loaded; 0: only cache_size counts
        self.lock = threading.RLock()  # held while loading
        self.loaders: dict[str, Loader] = {}
        self._cache: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._things: OrderedDict[Path, LoadedThing] = OrderedDict()
        self._current: LoadedModel | None = None
        self._on_loaded = on_loaded
        self.loading: CatalogEntry | None = None  # the model being read from disk, for status lines
        self.fast_path = fast_path
        self._facts: fastpath.DeviceFacts | None = None  # probed on the first load

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self, name: str | None = None, preferred: str | None = None) -> LoadedModel:
        """The loaded model named `name` (loading it if needed); None keeps the current one."""
        with self.lock:
            if name is None and self._current is not None:
                return self._current
            if name is None:
                entry = self.catalog.default_entry(preferred)
            else:
                entry = self.catalog.find(name)
                if entry is None:
                    self.catalog.scan()
                    entry = self.catalog.find(name)
                if entry is None:
                    names = ", ".join(e.name for e in self.catalog.entries) or "(none)"
                    raise ModelNotFound(f"unknown model {name!r}; available: {names}")
            return self.load(entry)

    def load(self, entry: CatalogEntry) -> LoadedModel:
        with self.lock:
            cached = self._cache.get(entry.path)
            if cached is not None:
                self._activate(cached)
                return cached
            previous = self._current
            if previous is not None and self.device.device != "cpu":
                self._move(previous, "cpu")  # make room, but keep it until the new one works
            self.loading = entry
            try:
                loaded = self._load_uncached(entry)
            except Exception as exc:
                if previous is not None:
                    self._move(previous, self.device.device)
                if isinstance(exc, ModelLoadError):
                    raise
                log.exception("loading %s failed", entry.path)
                raise ModelLoadError(f"could not load {entry.name}: {_short_reason(exc)}. The previous model stays loaded.") from exc
            finally:
                self.loading = None
            self._cache[entry.path] = loaded
            self._activate(loaded)
            self._evict(keep=entry.path)
            if self._on_loaded is not None:
                self._on_loaded(loaded)
            return loaded

    def unload(self) -> None:
        with self.lock:
            self._cache.clear()
            self._things.clear()
            self._current = None
            free_memory(self.device.device)

    # --- other kinds -------------------------------------------------------------------------
    def add_loader(self, kind: str, loader: Loader) -> None:
        self.loaders[kind] = loader

    def get_of_kind(self, kind: str, name: str) -> LoadedThing:
        """The loaded model of `kind` named `name`, loading it (and evicting others past the budget)."""
        with self.lock:
            entry = self.catalog.find_of_kind(kind, name)
            if entry is None:
                self.catalog.scan()
                entry = self.catalog.find_of_kind(kind, name)
            if entry is None:
                names = ", ".join(e.name for e in self.catalog.of_kind(kind)) or "(none)"
                raise ModelNotFound(f"unknown {kind} {name!r}; available: {names}")
            cached = self._things.get(entry.path)
            if cached is not None:
                self._things.move_to_end(entry.path)
                return cached
            if kind not in self.loaders:
                raise ModelLoadError(f"Kiri cannot load {kind} models yet ({entry.name})")
            if entry.format == "pickle" and not self.allow_pickle:
                raise PickleRefused(f"{entry.path.name} is a pickle file, which can run arbitrary code when loaded. "
                                    "Use a .safetensors file, or start Kiri with --allow-pickle.")
            try:
                model = self.loaders[kind](entry, self.device, self.allow_pickle)
            except ModelLoadError:
                raise
            except Exception as exc:
                log.exception("loading %s failed", entry.path)
                raise ModelLoadError(f"could not load {entry.name}: {_short_reason(exc)}") from exc
            thing = self._things[entry.path] = LoadedThing(entry, model, self.device.device)
            self._evict(keep=entry.path)
            return thing

    def loaded_bytes(self) -> int:
        """Every loaded model's size, plus what add-ons keep on the checkpoints (LoRA weights, ...)."""
        return (sum(m.entry.size_bytes + derived_bytes(m) for m in self._cache.values())
                + sum(t.entry.size_bytes for t in self._things.values()))

    def loaded(self) -> list[CatalogEntry]:
        """Everything in memory now, checkpoints first, least recently used first."""
        return [m.entry for m in self._cache.values()] + [t.entry for t in self._things.values()]

    def _activate(self, model: LoadedModel) -> None:
        if self._current is not None and self._current is not model and self.device.device != "cpu":
            self._move(self._current, "cpu")
        self._move(model, self.device.device)
        self._cache.move_to_end(model.entry.path)
        self._current = model

    def _evict(self, keep: Path | None = None) -> None:
        """Drop least recently used models: checkpoints past cache_size, then anything past the
        memory budget (never the current checkpoint, nor what was just loaded)."""
        while len(self._cache) > self.cache_size:
            path, dropped = self._cache.popitem(last=False)
            log.info("dropping %s from the model cache", dropped.name)
        while self.memory_budget and self.loaded_bytes() > self.memory_budget:
            current = self._current.entry.path if self._current is not None else None
            victims = [p for p in self._things if p != keep] + [p for p in self._cache if p not in (current, keep)]
            if not victims:
                break
            dropped = self._things.pop(victims[0], None) or self._cache.pop(victims[0])
            log.info("dropping %s: loaded models are over the memory budget", dropped.name)
        free_memory(self.device.device)

    @staticmethod
    def _move(model: LoadedModel, device: str) -> None:
        if model.device != device:
            memory.release(model.pipeline, model.derived, model.device)  # offload hooks off first
            model.pipeline.to(device)
            model.device = device

    def _load_uncached(self, entry: CatalogEntry) -> LoadedModel:
        if entry.format == "pickle" and not self.allow_pickle:
            raise PickleRefused(
                f"{entry.path.name} is a pickle checkpoint, which can run arbitrary code when loaded. "
                "Convert it to .safetensors, or start Kiri with --allow-pickle to load it "
                "(Kiri then reads it with torch.load(weights_only=True))."
            )
        if entry.problem:
            raise ModelLoadError(f"cannot load {entry.name}: {entry.problem}")
        sha256 = self.catalog.full_hash(entry)
        if entry.format == "diffusers":
            family = entry.family or "sd1"
            plan = self.device.plan_for(family, _vae_fp16_fix(entry.path))
            pipeline = self._load_folder(entry, plan)
        elif entry.format == "gguf":
            pipeline, family, plan = self._load_gguf(entry)
        else:
            pipeline, family, plan = self._load_single_file(entry)
        _apply_plan(pipeline, plan)
        if entry.quantization == "fp8":
            _store_fp8(entry, pipeline, plan)
        fast = self._apply_fast_path(entry, pipeline, family or "sd1", plan)
        pipeline.set_progress_bar_config(disable=True)
        # What the denoiser predicts comes from the scheduler config that was loaded: for a single
        # file that is models/configs/<family>/ (an SD 2.x 768-v file is v-prediction), which the
        # catalog's scan of weight names cannot know.
        prediction = prediction_from_config(dict(pipeline.scheduler.config))
        return LoadedModel(entry, pipeline, family or "sd1", prediction, sha256, "cpu", plan, fast)

    def facts(self) -> fastpath.DeviceFacts:
        if self._facts is None:
            self._facts = fastpath.probe(self.device.device)
        return self._facts

    def _apply_fast_path(self, entry: CatalogEntry, pipeline: Any, family: str, plan: DtypePlan) -> fastpath.FastPathPlan:
        """The fast path for this checkpoint on this device (core/fastpath.py), applied and logged."""
        facts = self.facts()
        wanted = fastpath.fast_path_plan(facts, family, self.fast_path, vae_upcast=plan.vae_upcast, stored=entry.quantization)
        applied = fastpath.apply(pipeline, wanted)
        log.info("%s on %s%s: %s", entry.name, facts.device, f" ({facts.name})" if facts.name else "", applied.text())
        return applied

    def _load_folder(self, entry: CatalogEntry, plan: DtypePlan, **components: Any) -> Any:
        """A diffusers folder; `components` (a GGUF transformer) take the place of the folder's own."""
        import diffusers

        index_class = _read_class_name(entry.path)
        pipeline_class = getattr(diffusers, index_class, None) or diffusers.DiffusionPipeline
        kwargs: dict[str, Any] = {"dtype": _dtype_map(plan), "local_files_only": True}
        parameters = inspect.signature(pipeline_class.__init__).parameters
        if "safety_checker" in parameters:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        # Components a folder leaves out on purpose (SD3 without T5, no image encoder) load as None.
        index = json.loads((entry.path / "model_index.json").read_text())
        for name, parameter in parameters.items():
            left_out = index.get(name) == [None, None] or (name not in index and parameter.default is None)
            if left_out and name not in kwargs and name != "self":
                kwargs[name] = None
        if any(entry.path.rglob("*.safetensors")):
            kwargs["use_safetensors"] = True
        kwargs.update(components)
        return pipeline_class.from_pretrained(str(entry.path), **kwargs)

    def gguf_base(self, entry: CatalogEntry) -> CatalogEntry:
        """The diffusers folder whose text encoders, VAE and scheduler a GGUF transformer runs with, as ComfyUI
        and Forge users pair a GGUF UNet with their base model's CLIP and VAE: the first (by name) of the same
        family, not quantised itself, whose transformer config has the file's shape (its block counts, and
        for Flux the guidance embedding: a FLUX.1-dev file goes with FLUX.1-dev, not schnell)."""
        family = entry.family or ""
        label = FAMILIES.get(family, family)
        shape = quant.gguf_info(entry.path).shape
        bases = [b for b in self.catalog.entries
                 if b.format == "diffusers" and b.family == family and b.problem is None and b.quantization is None]
        for base in bases:
            try:
                config = json.loads((base.path / "transformer" / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if quant.fits(shape, config):
                return base
        what = f"{entry.path.name} holds only a {label} transformer (quantised {entry.quantization or 'GGUF'}); Kiri runs it " \
               f"with the text encoders, VAE and scheduler of a {label} diffusers folder in {self.catalog.checkpoints_dir}"
        if bases:
            raise ModelLoadError(f"{what}, and none of those there ({', '.join(b.name for b in bases)}) has its shape "
                                 f"({', '.join(f'{k} {v}' for k, v in (shape or {}).items())}): add the base model this file "
                                 "was quantised from, in diffusers format")
        raise ModelLoadError(f"{what}, and there is none: add one (the base model this file was quantised from, in "
                             "diffusers format)")

    def _load_gguf(self, entry: CatalogEntry) -> tuple[Any, str, DtypePlan]:
        """A GGUF transformer (diffusers' GGUFQuantizationConfig: the weights stay quantised, each layer is
        dequantised to the compute dtype when it runs) in the pipeline of its family's base folder."""
        import diffusers

        family = entry.family or ""
        if family not in quant.GGUF_FAMILIES:
            raise ModelLoadError(f"cannot load {entry.name}: {entry.problem or 'not a Flux or SD3 transformer'}")
        if not quant.gguf_available():
            raise ModelLoadError(f"loading {entry.path.name} needs the gguf package: {quant.INSTALL_GGUF}")
        base = self.gguf_base(entry)
        plan = self.device.plan_for(family, _vae_fp16_fix(base.path))
        compute = plan.torch_dtype("denoiser")
        transformer_class = getattr(diffusers, quant.GGUF_FAMILIES[family])
        log.info("loading %s (%s) with the text encoders and VAE of %s", entry.path.name, entry.quantization, base.name)
        transformer = transformer_class.from_single_file(
            str(entry.path), quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=compute),
            config=str(base.path), subfolder="transformer", torch_dtype=compute, local_files_only=True,
        )
        return self._load_folder(base, plan, transformer=transformer), family, plan

    def _load_single_file(self, entry: CatalogEntry) -> tuple[Any, str, DtypePlan]:
        import os

        import diffusers

        family = entry.family
        if entry.format == "pickle":
            family = self._pickle_family(entry.path)
        if family not in SINGLE_FILE_PIPELINES:
            raise ModelLoadError(
                f"single-file {FAMILIES.get(family or '', 'unknown')} checkpoints are not supported; "
                "use the diffusers folder of this model instead"
            )
        class_name, hub_repo = SINGLE_FILE_PIPELINES[family]
        config_dir = self.catalog.models_dir / "configs" / family
        missing = (
            f"{entry.name} is a single-file {FAMILIES[family]} checkpoint, and loading it needs that family's "
            f"configuration: add the folder models/configs/{family}/ ({config_dir}) holding the {FAMILIES[family]} "
            f"diffusers folder without its weights (model_index.json, each component's config and the tokenizers, "
            f"as on {hub_repo})"
        )
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        if not config_dir.is_dir() and offline:
            raise ModelLoadError(missing + ".")
        plan = self.device.plan_for(family, _vae_fp16_fix(config_dir))
        kwargs: dict[str, Any] = {"dtype": plan.torch_dtype("denoiser")}
        if config_dir.is_dir():
            kwargs.update(config=str(config_dir), local_files_only=True)
        else:
            kwargs.update(config=hub_repo)
        if family in ("sd1", "sd2"):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipeline_class = getattr(diffusers, class_name)
        if family == "sd3" and config_dir.is_dir() and sd3_file.applies(config_dir):
            return sd3_file.load(entry.path, config_dir, kwargs["dtype"]), family, plan
        try:
            pipeline = pipeline_class.from_single_file(str(entry.path), **kwargs)
        except Exception as exc:
            if not config_dir.is_dir():
                # Fetching the configuration failed (no network, hub down): say what to add, not how the fetch broke.
                log.info("fetching the %s configuration from %s failed: %s", family, hub_repo, exc)
                raise ModelLoadError(missing + ", or connect to the internet once so Kiri can fetch it.") from None
            raise
        _check_all_weights_loaded(entry, pipeline, family)
        return pipeline, family, plan

    @staticmethod
    def _pickle_family(path: Path) -> str:
        import pickle

        import torch

        try:
            # weights_only=True refuses any object that is not plain tensors and containers.
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
            raise ModelLoadError(f"{path.name} could not be read safely: {_short_reason(exc)}") from exc
        while isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            return family_from_keys(list(state))
        except UnknownFamily as exc:
            raise ModelLoadError(f"{path.name}: {exc}") from exc


def _vae_fp16_fix(folder: Path) -> bool:
    """Whether a checkpoint's VAE is safe to decode in fp16: its config says force_upcast false
    (as the fp16-fix VAEs' configs do)."""
    try:
        return json.loads((folder / "vae" / "config.json").read_text()).get("force_upcast", True) is False
    except (OSError, ValueError, AttributeError):
        return False


_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _dtype_map(plan: DtypePlan) -> dict[str, Any]:
    """The plan as diffusers' per-component dtype map for from_pretrained."""
    dtypes: dict[str, Any] = {"default": plan.torch_dtype("denoiser"), "vae": plan.torch_dtype("vae")}
    dtypes.update({name: plan.torch_dtype("text_encoders") for name in _TEXT_ENCODERS})
    return dtypes


def _apply_plan(pipeline: Any, plan: DtypePlan) -> None:
    """Give each component its planned dtype (single files load in one dtype) and tell the VAE
    whether to decode in fp32: diffusers' SDXL pipelines upcast a fp16 VAE whose config says
    force_upcast. The policy asks for it only for those (SDXL's VAE overflows in fp16)."""
    import torch

    for name, dtype in [(n, plan.torch_dtype("text_encoders")) for n in _TEXT_ENCODERS] + [("vae", plan.torch_dtype("vae"))]:
        module = getattr(pipeline, name, None)
        if isinstance(module, torch.nn.Module) and any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
            module.to(dtype)
    vae = getattr(pipeline, "vae", None)
    if vae is not None and hasattr(vae, "register_to_config") and "force_upcast" in getattr(vae, "config", {}):
        vae.register_to_config(force_upcast=plan.vae_upcast)


def _check_all_weights_loaded(entry: CatalogEntry, pipeline: Any, family: str) -> None:
    """A single file that lacks some tensor the configuration asks for leaves that weight empty
    (on the meta device), and the pipeline then makes NaN pictures: refuse it at load time."""
    import torch

    for name, module in pipeline.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        empty = [key for key, tensor in module.state_dict().items() if tensor.is_meta]
        if empty:
            raise ModelLoadError(
                f"{entry.name} does not match the {FAMILIES[family]} configuration in models/configs/{family}/: "
                f"{len(empty)} weights of its {name} are missing from the file (e.g. {empty[0]}). "
                "Check that the file is a complete checkpoint of that family."
            )


def _store_fp8(entry: CatalogEntry, pipeline: Any, plan: DtypePlan) -> None:
    """An fp8 checkpoint's denoiser back in fp8 (diffusers loads every weight in the compute dtype):
    diffusers' layerwise casting keeps each layer's weights in the file's float8 type and casts them to
    the compute dtype (float32 on the CPU, fp16/bf16 on a GPU) only while that layer runs. Norms and
    the patch/position embeddings stay in the compute dtype (diffusers' default skip list)."""
    import torch

    from webui.engine.models.families import read_safetensors_header

    if entry.path.is_dir():
        storage = quant.fp8_of_folder(entry.path)
    else:
        storage = quant.single_file_fp8(read_safetensors_header(entry.path))
    denoiser = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    if storage is None or denoiser is None or not hasattr(denoiser, "enable_layerwise_casting"):
        return
    compute = plan.torch_dtype("denoiser")
    denoiser.enable_layerwise_casting(storage_dtype=getattr(torch, storage), compute_dtype=compute)
    # A LoRA added later (PEFT) makes its adapter in its layer's dtype, unless the layer names a compute_dtype
    # (as bitsandbytes' layers do): named here, the adapter's weights are loaded and kept in the compute dtype,
    # not rounded to fp8 (in which they could not compute either).
    for module in denoiser.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            module.compute_dtype = compute


def _read_class_name(folder: Path) -> str:
    return json.loads((folder / "model_index.json").read_text()).get("_class_name", "DiffusionPipeline")


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
