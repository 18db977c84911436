"""Capabilities that rewrite a request's prompt text before the text encoder reads it, in two places:

    per request  step(settings, request) -> None, in Engine.prepare_request before the before_generate
                 hooks, so before the job is queued (styles: the named styles merged into the prompts;
                 dynamic prompts: the template checked). Unlike a hook's, its InvalidRequest is not
                 skipped: it refuses the request, naming the field.
    per image    step(settings, prompt, negative, seed) -> ImagePrompt | None, in the runner for each
                 image from that image's seed (dynamic prompts: `{a|b}` and `__wildcards__` resolved),
                 so one seed repeats its picture; None keeps the text. The infotext records the text the
                 image was made from, plus the step's keys (A1111's `Template`).

Capabilities register theirs with `registries.add_request_step` / `add_image_prompt_step`, in the
order bootstrap calls them (styles before dynamic prompts: a style may hold `{a|b}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ImagePrompt", "PromptSteps"]


@dataclass
class ImagePrompt:
    """The text one image is made from, and the infotext keys that say how it came to be."""

    prompt: str
    negative_prompt: str
    infotext: dict[str, object] = field(default_factory=dict)


RequestStep = Callable[[Any, Any], None]  # (settings, request): edits the request in place
ImageStep = Callable[[Any, str, str, int], "ImagePrompt | None"]  # (settings, prompt, negative, seed)


@dataclass
class PromptSteps:
    per_request: list[RequestStep] = field(default_factory=list)
    per_image: list[ImageStep] = field(default_factory=list)

    def prepare(self, settings: Any, request: Any) -> None:
        for step in self.per_request:
            step(settings, request)

    def for_image(self, settings: Any, prompt: str, negative: str, seed: int) -> ImagePrompt:
        text = ImagePrompt(prompt, negative)
        for step in self.per_image:
            changed = step(settings, text.prompt, text.negative_prompt, seed)
            if changed is not None:
                text = ImagePrompt(changed.prompt, changed.negative_prompt, {**text.infotext, **changed.infotext})
        return text
