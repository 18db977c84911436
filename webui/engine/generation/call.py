"""The pipeline call, and clip skip, the first add-on.

A task (txt2img, img2img, inpaint, hires fix and SD upscale passes, video frames) builds one
`PipelineCall` per batch, as do text to video (one per clip, or per FreeInit round), motion video
to video (one per window) and the diffusion upscalers (one per tile), each run through
runner.call_with_addons: which pipeline object to call, with which arguments, which components
swapped in for this call only, and what the infotext should say. Add-ons change the call around
each run, with per-model, per-job and per-step lifetimes too: see core/addons.py, where `Addon`,
`AddonSpec` and `AddonRegistry` live (re-exported here for extensions written against this module).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

from webui.engine.core.addons import Addon, AddonFactory, AddonRegistry, AddonSpec
from webui.engine.core.errors import InvalidRequest

__all__ = ["Addon", "AddonFactory", "AddonRegistry", "AddonSpec", "ClipSkip", "PipelineCall", "builtin_addons"]

log = logging.getLogger(__name__)


@dataclass
class PipelineCall:
    pipeline: Any  # the diffusers pipeline to call (shared: change it only through `components`)
    kwargs: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)  # swapped in for this call only (scheduler, vae, ...)
    infotext: dict[str, object] = field(default_factory=dict)  # added after the task's own parameters
    passthrough: list[Any] | None = None  # images to return without calling (nothing to denoise)
    tensor_inputs: list[str] = field(default_factory=list)  # what the step callback reads (beyond latents)
    conditioning: Any = None  # the prompt schedule (conditioning.PromptSchedule) the runner encodes after apply()
    prompt_stage: bool = True  # False: the pipeline encodes its prompt itself (the diffusion upscalers)
    resolvable: bool = True  # False: not an image pipeline the resolver can rebuild with add-ons' modules (video)
    frames: bool = False  # a video pipeline: its output's frames[0] (one clip), not images
    first_pass_steps: int | None = None  # a hires fix's second pass: the first pass's steps (the prompt schedule reads on)
    warnings: list[str] = field(default_factory=list)  # add-ons' notes for the result (an embedding skipped)

    def accepts(self, name: str) -> bool:
        return name in inspect.signature(self.pipeline.__call__).parameters

    def run(self) -> list[Any]:
        """Call the pipeline with the components swapped in, and put the shared ones back after."""
        import torch

        if self.passthrough is not None:
            return list(self.passthrough)
        accepted = inspect.signature(self.pipeline.__call__).parameters
        # None means "not given": the pipeline's own default applies (PixArt's negative_prompt is "" and fails on None).
        kwargs = {k: v for k, v in self.kwargs.items() if k in accepted and v is not None}
        if "callback_on_step_end" in kwargs and "callback_on_step_end_tensor_inputs" in accepted:
            offered = list(getattr(self.pipeline, "_callback_tensor_inputs", ["latents"]))
            missing = [name for name in self.tensor_inputs if name not in offered]
            if missing:
                raise InvalidRequest("addons", f"{type(self.pipeline).__name__} does not hand its step callback "
                                               f"{', '.join(missing)} (it offers {', '.join(offered)})")
            kwargs["callback_on_step_end_tensor_inputs"] = [n for n in offered if n == "latents" or n in self.tensor_inputs]
        saved = {name: getattr(self.pipeline, name) for name in self.components}
        try:
            for name, component in self.components.items():
                setattr(self.pipeline, name, component)
            with torch.inference_mode():
                out = self.pipeline(**kwargs)
                return list(out.frames[0] if self.frames else out.images)
        finally:
            for name, component in saved.items():
                setattr(self.pipeline, name, component)


class ClipSkip(Addon):
    """AUTOMATIC1111's "Clip skip": condition on the text encoder's n-th last layer (1 = the last).

    diffusers counts the layers skipped (clip_skip=1 is A1111's 2), so apply() adds n - 1."""

    name = "clip_skip"
    MAX = 12

    def __init__(self, layers: int):
        self.layers = layers

    @classmethod
    def from_settings(cls, value: Any) -> "ClipSkip | None":
        if isinstance(value, dict):
            value = value.get("value", value.get("layers"))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cls.MAX:
            raise InvalidRequest("clip_skip", f"clip skip must be a whole number from 1 to {cls.MAX} (got {value!r})")
        return None if value == 1 else cls(value)

    def prepare(self, model: Any, request: Any) -> None:
        encoder = getattr(model.pipeline, "text_encoder", None)
        layers = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
        if layers is not None and self.layers > layers:
            raise InvalidRequest("clip_skip", f"clip skip {self.layers} is more than this model's text encoder has "
                                              f"layers ({layers})")

    def apply(self, call: PipelineCall) -> None:
        if call.conditioning is not None:  # the conditioning stage encodes from the n-th last layer
            call.conditioning.clip_skip = self.layers
        elif call.accepts("clip_skip"):
            encoder = getattr(call.pipeline, "text_encoder", None)
            if encoder is not None and type(encoder).__name__.startswith("CLIPText") and not hasattr(encoder, "text_model"):
                # diffusers' own clip skip reads text_encoder.text_model, which this transformers' CLIP lacks
                raise InvalidRequest("clip_skip", f"{type(call.pipeline).__name__} encodes this prompt itself (FreeNoise "
                                                  "windows, prompt travel), and its own clip skip does not run with this "
                                                  "version of transformers")
            call.kwargs["clip_skip"] = self.layers - 1
        else:
            raise InvalidRequest("clip_skip", f"this model's pipeline ({type(call.pipeline).__name__}) has no clip skip")
        call.infotext.update(self.infotext())

    def infotext(self) -> dict[str, object]:
        return {"Clip skip": self.layers}


def builtin_addons() -> list[AddonSpec]:
    return [AddonSpec("clip_skip", ClipSkip.from_settings, ("Clip skip",))]
