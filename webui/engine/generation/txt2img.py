"""Text to image: the runner's task that starts from noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webui.engine.generation.call import PipelineCall
from webui.engine.generation.requests import Txt2ImgRequest
from webui.engine.generation.runner import common_infotext, version_param
from webui.engine.samplers.registry import Sampler

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.models.manager import LoadedModel


@dataclass
class Txt2ImgTask:
    request: Txt2ImgRequest
    kind: str = "txt2img"

    def check(self, model: "LoadedModel", sampler: Sampler, scheduler: Any, engine: "Engine") -> None:
        pass  # every sampler can start from noise

    def steps_per_batch(self) -> int:
        return self.request.steps

    def call(self, model: "LoadedModel", prompt: str, negative: str, seeds: list[int], generators: list[Any]) -> PipelineCall:
        r = self.request
        return PipelineCall(model.pipeline, dict(
            prompt=prompt, negative_prompt=negative or None, num_inference_steps=r.steps, guidance_scale=r.cfg_scale,
            width=r.width, height=r.height, num_images_per_prompt=r.batch_size, generator=generators, output_type="pil",
        ))

    def finish(self, images: list[Any]) -> list[Any]:
        return images

    def infotext_params(self, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
        return {**common_infotext(self.request, model, sampler, schedule, seed), **version_param()}
