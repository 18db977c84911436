"""What built-in capabilities and extensions register into, through the same verbs.

Each capability (generation, upscale, segment, video, and the add-ons after them) has a
`register(registries)` that bootstrap calls; an extension gets the same verbs through KiriAPI. The
Engine is then built from the registries and keeps only the services: it imports no capability.

    add_job_kind(kind)                       a job plain data and the UI/API can run (core/job_kinds.py)
    extend_job_kind(name, when, work)        a variant of another capability's kind (hires fix on txt2img)
    add_model_kind(kind)                     a kind of model file in the catalog (models/catalog.ModelKind)
    add_loader(kind, loader)                 how the model manager loads that kind
    add_addon(spec)                          a pipeline add-on (core/addons.py)
    add_request_step(step)                   rewrites a request's prompts before it is queued (core/prompt_steps.py)
    add_image_prompt_step(step)              rewrites each image's prompt from its seed (core/prompt_steps.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from webui.engine.core.addons import AddonRegistry, AddonSpec
from webui.engine.core.hooks import Hooks
from webui.engine.core.job_kinds import JobKind, JobKinds, Variant
from webui.engine.core.prompt_steps import PromptSteps
from webui.engine.samplers.registry import SamplerRegistry

__all__ = ["Registries"]


@dataclass
class Registries:
    samplers: SamplerRegistry = field(default_factory=SamplerRegistry)
    hooks: Hooks = field(default_factory=Hooks)
    addons: AddonRegistry = field(default_factory=AddonRegistry)
    job_kinds: JobKinds = field(default_factory=JobKinds)
    model_kinds: list[Any] = field(default_factory=list)  # catalog ModelKinds beyond the built-in ones
    loaders: dict[str, Callable[..., Any]] = field(default_factory=dict)  # model kind -> loader(entry, device, allow_pickle)
    prompt_steps: PromptSteps = field(default_factory=PromptSteps)  # styles, dynamic prompts

    def add_job_kind(self, kind: JobKind) -> None:
        self.job_kinds.register(kind)

    def extend_job_kind(self, name: str, when: Callable[[Any], bool], work: Callable[[Any, Any], Callable],
                        source: str = "built-in", parts: bool = False) -> None:
        self.job_kinds.extend(name, Variant(when, work, source, parts))

    def add_model_kind(self, kind: Any) -> None:
        self.model_kinds.append(kind)

    def add_loader(self, kind: str, loader: Callable[..., Any]) -> None:
        if kind in self.loaders:
            raise ValueError(f"a loader for {kind!r} models is registered already")
        self.loaders[kind] = loader

    def add_addon(self, spec: AddonSpec, override: bool = False) -> None:
        self.addons.register(spec, override=override)

    def add_request_step(self, step: Callable[[Any, Any], None]) -> None:
        self.prompt_steps.per_request.append(step)

    def add_image_prompt_step(self, step: Callable[..., Any]) -> None:
        self.prompt_steps.per_image.append(step)
