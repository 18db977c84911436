"""The pipeline resolver: which diffusers pipeline a batch calls, from the model's family, the task
(text to image, image to image, inpainting) and what the add-ons hand it (a ControlNet, ...).

The pipeline is built from the loaded model's own components (diffusers' AutoPipeline `from_pipe`
with the add-ons' modules: the same weights, no copies, no casts) and kept on the model as derived
state, so a batch does not build it again and it is dropped with the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui.engine.core.errors import InvalidRequest

if TYPE_CHECKING:
    from webui.engine.models.manager import LoadedModel

TASKS = ("text2image", "image2image", "inpaint")
_DERIVED = "pipeline"

# Pipelines diffusers' AutoPipeline does not map from a component: (the pipeline's argument an add-on hands,
# the checkpoint's pipeline class, task) -> the diffusers pipeline class that takes it. Facts about
# diffusers, not about any add-on (a T2I-Adapter is handed as "adapter").
COMPONENT_PIPELINES: dict[tuple[str, str, str], str] = {
    ("adapter", "StableDiffusionPipeline", "text2image"): "StableDiffusionAdapterPipeline",
    ("adapter", "StableDiffusionXLPipeline", "text2image"): "StableDiffusionXLAdapterPipeline",
}


def pipeline_for(model: "LoadedModel", task: str | None, components: dict[str, Any] | None = None, base: Any = None) -> Any:
    """The pipeline for `task` on `model` that takes `components` (by argument name, e.g. "controlnet").

    `base` is the pipeline the task would call without add-ons (its task, when `task` is None, read
    from its class: ...Img2Img..., ...Inpaint..., else text to image); with no components it is
    returned as it is. Refused naming the add-ons when diffusers has no such pipeline for the family."""
    components = dict(components or {})
    base = base if base is not None else model.pipeline
    task = task or task_of(base)
    if task not in TASKS:
        raise ValueError(f"unknown pipeline task {task!r}; one of {', '.join(TASKS)}")
    if not components:
        return base
    key = (_DERIVED, task, type(base).__name__, tuple(sorted((name, id(module)) for name, module in components.items())))
    derived = model.derived
    if key not in derived:
        derived[key] = _build(model, task, components, base)
    return derived[key]


def task_of(pipeline: Any) -> str:
    name = type(pipeline).__name__
    return "inpaint" if "Inpaint" in name else "image2image" if "Img2Img" in name else "text2image"


def _build(model: "LoadedModel", task: str, components: dict[str, Any], base: Any) -> Any:
    import diffusers

    auto = {"text2image": diffusers.AutoPipelineForText2Image, "image2image": diffusers.AutoPipelineForImage2Image,
            "inpaint": diffusers.AutoPipelineForInpainting}[task]
    special = {COMPONENT_PIPELINES.get((name, type(model.pipeline).__name__, task)) for name in components} - {None}
    unmapped = [name for name in components if any(key[0] == name for key in COMPONENT_PIPELINES)
                and (name, type(model.pipeline).__name__, task) not in COMPONENT_PIPELINES]
    if unmapped or len(special) > 1:
        raise InvalidRequest("addons", f"{model.name} is a {type(model.pipeline).__name__} model, and diffusers has no "
                                       f"{task} pipeline for it that takes {', '.join(sorted(components))}")
    if special:
        auto = getattr(diffusers, special.pop())
        base = model.pipeline if task == "text2image" else base
    try:
        pipeline = auto.from_pipe(base, **components)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest("addons", f"{model.name} is a {type(base).__name__} model, and diffusers has no "
                                       f"{task} pipeline for it that takes {', '.join(sorted(components))}") from exc
    missing = [name for name in components if getattr(pipeline, name, None) is not components[name]]
    if missing:
        raise InvalidRequest("addons", f"{type(pipeline).__name__} does not take {', '.join(missing)}")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
