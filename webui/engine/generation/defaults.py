"""The sampler, schedule, steps and CFG scale a model is run with when the request leaves them unset.

Ordinary models: the prediction type's default sampler (DPM++ 2M; Flow Euler on flow models), 20 steps,
CFG 7. Few-step models (LCM, TCD, Turbo, Lightning, Hyper-SD; models/fewstep.py reads which from the
checkpoint's config, metadata or name) and few-step LoRAs named in the prompt (`<lora:lcm-lora-sdxl:1>`,
which turn any checkpoint into one) get their recipe instead. The Text to image tab shows these when a
model is picked, /sdapi fills the fields a client leaves out with them, and an engine request's None
steps or CFG scale is filled with them before the job is queued (and where a stage skipped that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import KiriError
from webui.engine.core.prompt_tags import split_tags
from webui.engine.models import fewstep
from webui.engine.samplers.registry import FLOW, default_sampler

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.models.catalog import Catalog, CatalogEntry

__all__ = ["ModelDefaults", "defaults_for", "model_defaults", "fill_defaults", "ORDINARY_STEPS", "ORDINARY_CFG"]

ORDINARY_STEPS = 20
ORDINARY_CFG = 7.0
LORA_TAGS = ("lora", "lyco")


@dataclass(frozen=True)
class ModelDefaults:
    sampler_name: str
    scheduler: str | None  # a schedule type; None: the sampler's own
    steps: int
    cfg_scale: float
    few_step: fewstep.FewStep | None = None  # the recipe that set them; None for an ordinary model
    lora: str | None = None  # the few-step LoRA whose recipe it is

    @property
    def note(self) -> str:
        """Why these defaults, for a tab's hint: "" for an ordinary model."""
        if self.few_step is None:
            return ""
        what = f"LoRA {self.lora}" if self.lora else "this model"
        schedule = f", {self.scheduler}" if self.scheduler else ""
        return (f"{self.few_step.label} few-step {what} (from its {self.few_step.source}): {self.sampler_name}{schedule}, "
                f"{self.steps} steps, CFG {self.cfg_scale:g}")


def _few_step_lora(catalog: "Catalog", prompt: str | None) -> tuple[fewstep.FewStep, str] | None:
    """The first LoRA tag of the prompt whose file is a few-step LoRA, and its name."""
    for tag in split_tags(prompt)[1]:
        if tag.kind not in LORA_TAGS or not tag.args:
            continue
        entry = catalog.find_of_kind("lora", tag.args[0])
        if entry is None:
            continue
        recipe = fewstep.detect(entry.path, lora=True)
        if recipe is not None:
            return recipe, entry.name
    return None


def defaults_for(entry: "CatalogEntry | None", catalog: "Catalog | None" = None, prompt: str | None = None) -> ModelDefaults:
    """The defaults of a catalog entry (None: an ordinary epsilon model), a few-step LoRA in `prompt` first."""
    prediction = getattr(entry, "prediction", None) or "epsilon"
    recipe, lora = getattr(entry, "few_step", None), None
    found = _few_step_lora(catalog, prompt) if catalog is not None and prompt else None
    if found is not None:
        recipe, lora = found
    if recipe is None:
        return ModelDefaults(default_sampler(prediction), None, ORDINARY_STEPS, ORDINARY_CFG)
    if prediction == FLOW:  # SD3.5 Turbo, Flux schnell-style distillations: the flow Euler step, their steps and CFG
        return ModelDefaults(default_sampler(FLOW), None, recipe.steps, recipe.cfg_scale, recipe, lora)
    return ModelDefaults(recipe.sampler, recipe.scheduler, recipe.steps, recipe.cfg_scale, recipe, lora)


def model_defaults(engine: "Engine", model: str | None = None, prompt: str | None = None) -> ModelDefaults:
    """The defaults for a request naming `model` (None: the selected one) with `prompt`; reads the catalog
    only (no model is loaded)."""
    try:
        entry = engine.catalog.find(model) if model else engine.current_entry()
    except KiriError:  # no checkpoint at all: the job names the problem when it runs
        entry = None
    return defaults_for(entry, engine.catalog, prompt)


def fill_defaults(request: Any, defaults: ModelDefaults) -> Any:
    """A request's unset fields filled in: steps and CFG scale when None, and for a few-step model the
    sampler (and its schedule, unless one is asked for) when no sampler is named."""
    if request.steps is None:
        request.steps = defaults.steps
    if request.cfg_scale is None:
        request.cfg_scale = defaults.cfg_scale
    if request.sampler_name is None and defaults.few_step is not None:
        request.sampler_name = defaults.sampler_name
        if request.scheduler in (None, "", "Automatic"):
            request.scheduler = defaults.scheduler
    return request
