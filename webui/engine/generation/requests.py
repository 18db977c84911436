"""Typed generation requests, validated where they are made so every caller gets the same rules."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.text import MAX_PROMPT_CHARS, check_text  # noqa: F401 - re-exported: generation's rules

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_STEPS = 150
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 100
MAX_CFG = 30.0
SEED_MAX = 2**32 - 1
IMAGE_FORMATS = ("png", "jpg", "webp")


def random_seed() -> int:
    return random.randrange(SEED_MAX)


@dataclass
class HiresFix:
    """Text to image's second pass (AUTOMATIC1111's hires fix): upscale the first image, then
    image to image at the bigger size. The upscaler is checked by the upscale capability."""

    scale: float = 2.0
    # None (upscaler, denoising_strength): Kiri's default for the model, set before the job is queued
    # (upscale/_hires.py, hires_defaults): A1111's Latent at 0.7 for models trained at 256 px or more;
    # a pixel upscaler and no second-pass denoising for smaller ones (Kiri's 64 px models draw new
    # objects all over a picture twice their size, even at strength 0.05).
    upscaler: str | None = None  # a latent mode or any upscaler name
    steps: int = 0  # 0: the first pass's steps
    resize_x: int = 0  # resize to (0: by scale); the other side follows the aspect ratio when 0
    resize_y: int = 0
    denoising_strength: float | None = None
    sampler_name: str | None = None  # None: the first pass's sampler
    prompt: str = ""  # "": the first pass's prompt
    negative_prompt: str = ""

    def validate(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 1 <= self.scale <= 4:
            raise InvalidRequest("hr_scale", f"hires upscale must be between 1 and 4 (got {self.scale!r})")
        if self.upscaler is not None and (not isinstance(self.upscaler, str) or not self.upscaler.strip()):
            raise InvalidRequest("hr_upscaler", "hr_upscaler must name an upscaler or a latent mode")
        require_range("hr_second_pass_steps", self.steps, 0, MAX_STEPS)
        require_range("hr_resize_x", self.resize_x, 0, MAX_SIZE)
        require_range("hr_resize_y", self.resize_y, 0, MAX_SIZE)
        if self.denoising_strength is not None and (
                isinstance(self.denoising_strength, bool) or not isinstance(self.denoising_strength, (int, float))
                or not 0 <= self.denoising_strength <= 1):
            raise InvalidRequest("denoising_strength", f"denoising strength must be between 0 and 1 (got {self.denoising_strength!r})")
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidRequest(f"hr_{name}", f"hr_{name} must be text")
            check_text(f"hr_{name}", value)

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The second pass's size, in multiples of 8 as the model needs, within MIN_SIZE..MAX_SIZE."""
        if self.resize_x or self.resize_y:
            w = self.resize_x or round(width * self.resize_y / height)
            h = self.resize_y or round(height * self.resize_x / width)
            field = "hr_resize_x"
        else:
            w, h = round(width * self.scale), round(height * self.scale)
            field = "hr_scale"
        w, h = max(MIN_SIZE, w // 8 * 8), max(MIN_SIZE, h // 8 * 8)
        if w > MAX_SIZE or h > MAX_SIZE:
            raise InvalidRequest(field, f"the hires pass would be {w}x{h}; at most {MAX_SIZE} a side")
        return w, h


@dataclass
class Txt2ImgRequest:
    prompt: str
    negative_prompt: str = ""
    sampler_name: str | None = None  # None: the model's default sampler (a few-step model's own, generation/defaults.py)
    scheduler: str | None = None  # schedule type; None or "Automatic": the sampler's own
    steps: int | None = None  # None: the model's default (20; a few-step model's own), set before the job is queued
    cfg_scale: float | None = None  # None: the model's default (7; a few-step model's own)
    seed: int = -1  # -1: a random seed, recorded in the infotext
    width: int = 512
    height: int = 512
    batch_size: int = 1  # images per denoising batch
    n_iter: int = 1  # batch count: batches run one after another
    model: str | None = None  # catalog name; None keeps the loaded model
    addons: dict[str, Any] = field(default_factory=dict)  # {add-on name: its settings}, e.g. {"clip_skip": 2}
    save_images: bool | None = None  # None: the Settings tab decides
    image_format: str | None = None  # png, jpg or webp for the saved files; None: the Settings tab decides
    hires: HiresFix | None = None  # hires fix (Text to image only)
    # saved styles (styles.csv) merged into the prompts, in order, before the job is queued (engine/styles/)
    styles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.styles, list) or not all(isinstance(s, str) for s in self.styles):
            raise InvalidRequest("styles", "styles must be a list of style names")
        check_prompts(self)
        for name in ("width", "height"):
            value = getattr(self, name)
            require_int(name, value)
            if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
                raise InvalidRequest(name, f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} (got {value})")
        if self.steps is not None:
            require_range("steps", self.steps, 1, MAX_STEPS)
        require_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        require_range("n_iter", self.n_iter, 1, MAX_BATCH_COUNT)
        if self.cfg_scale is not None and (isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, (int, float))
                                           or not 0 <= self.cfg_scale <= MAX_CFG):
            raise InvalidRequest("cfg_scale", f"CFG scale must be between 0 and {MAX_CFG:g} (got {self.cfg_scale})")
        require_int("seed", self.seed)
        if not -1 <= self.seed <= SEED_MAX:
            raise InvalidRequest("seed", f"seed must be -1 (random) or between 0 and {SEED_MAX} (got {self.seed})")

        if self.image_format is not None and self.image_format not in IMAGE_FORMATS:
            raise InvalidRequest("image_format", f"image format must be one of {', '.join(IMAGE_FORMATS)} (got {self.image_format!r})")
        if not isinstance(self.addons, dict):
            raise InvalidRequest("addons", "addons must be an object of {name: settings}")
        if isinstance(self.hires, dict):  # plain data (core/plain.py) keeps nested objects as dicts
            self.hires = HiresFix(**self.hires)
        if self.hires is not None:
            if not isinstance(self.hires, HiresFix):
                raise InvalidRequest("enable_hr", "hires must be the hires fix settings")
            self.hires.validate()
            self.hires.target(self.width, self.height)

    @property
    def total_images(self) -> int:
        return self.batch_size * self.n_iter


@dataclass
class GenerationResult:
    images: list[Any] = field(default_factory=list)  # PIL images
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    model_name: str = ""
    model_hash: str = ""
    sampler_name: str = ""
    schedule: str = "Automatic"

    def add(self, image: Any, infotext: str, seed: int, path: Path | None = None) -> None:
        """One finished picture with its infotext and seed (and the file it was saved to, if any)."""
        if path is not None:
            self.paths.append(path)
        self.images.append(image)
        self.infotexts.append(infotext)
        self.seeds.append(seed)

    def saved_images(self) -> list[tuple[Any, Path]]:
        """(picture, its file) for the pictures saved to the outputs (core/results.py references those)."""
        return list(zip(self.images, self.paths)) if len(self.paths) == len(self.images) else []


def check_prompts(request: Any, subject: str = "image") -> None:
    """A request's prompt (non-empty text) and negative prompt (text; None becomes ""), both within
    check_text's limits; `subject` is what the empty-prompt message asks the user to describe."""
    if not isinstance(request.prompt, str) or not (request.prompt.strip() or getattr(request, "styles", None)):
        raise InvalidRequest("prompt", f"the prompt is empty: describe the {subject} you want")
    check_text("prompt", request.prompt)
    if request.negative_prompt is None:
        request.negative_prompt = ""
    if not isinstance(request.negative_prompt, str):
        raise InvalidRequest("negative_prompt", "the negative prompt must be text")
    check_text("negative_prompt", request.negative_prompt)


def require_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"{name} must be a whole number (got {value!r})")


def require_range(name: str, value: object, low: int, high: int) -> None:
    require_int(name, value)
    if not low <= value <= high:  # type: ignore[operator]
        raise InvalidRequest(name, f"{name} must be between {low} and {high} (got {value})")
