"""Typed generation requests, validated where they are made so every caller gets the same rules."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.engine.core.errors import InvalidRequest

MIN_SIZE, MAX_SIZE = 64, 2048
MAX_STEPS = 150
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 100
MAX_CFG = 30.0
# Far beyond any tokenizer's window (A1111 users write a few thousand at most); longer is refused.
MAX_PROMPT_CHARS = 20_000
# UTF-16 halves without their pair: no character at all, and no encoder (UTF-8, the tokenizer's,
# PNG's iTXt) can write them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SEED_MAX = 2**32 - 1
IMAGE_FORMATS = ("png", "jpg", "webp")


def random_seed() -> int:
    return random.randrange(SEED_MAX)


@dataclass
class Txt2ImgRequest:
    prompt: str
    negative_prompt: str = ""
    sampler_name: str | None = None  # None: the model's default sampler
    scheduler: str | None = None  # schedule type; None or "Automatic": the sampler's own
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1  # -1: a random seed, recorded in the infotext
    width: int = 512
    height: int = 512
    batch_size: int = 1  # images per denoising batch
    n_iter: int = 1  # batch count: batches run one after another
    model: str | None = None  # catalog name; None keeps the loaded model
    addons: dict[str, Any] = field(default_factory=dict)  # {add-on name: its settings}, e.g. {"clip_skip": 2}
    save_images: bool | None = None  # None: the Settings tab decides
    image_format: str | None = None  # png, jpg or webp for the saved files; None: the Settings tab decides

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidRequest("prompt", "the prompt is empty: describe the image you want")
        check_text("prompt", self.prompt)
        if self.negative_prompt is None:
            self.negative_prompt = ""
        if not isinstance(self.negative_prompt, str):
            raise InvalidRequest("negative_prompt", "the negative prompt must be text")
        check_text("negative_prompt", self.negative_prompt)
        for name in ("width", "height"):
            value = getattr(self, name)
            require_int(name, value)
            if not MIN_SIZE <= value <= MAX_SIZE or value % 8:
                raise InvalidRequest(name, f"{name} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE} (got {value})")
        require_range("steps", self.steps, 1, MAX_STEPS)
        require_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        require_range("n_iter", self.n_iter, 1, MAX_BATCH_COUNT)
        if not isinstance(self.cfg_scale, (int, float)) or not 0 <= self.cfg_scale <= MAX_CFG:
            raise InvalidRequest("cfg_scale", f"CFG scale must be between 0 and {MAX_CFG:g} (got {self.cfg_scale})")
        require_int("seed", self.seed)
        if not -1 <= self.seed <= SEED_MAX:
            raise InvalidRequest("seed", f"seed must be -1 (random) or between 0 and {SEED_MAX} (got {self.seed})")

        if self.image_format is not None and self.image_format not in IMAGE_FORMATS:
            raise InvalidRequest("image_format", f"image format must be one of {', '.join(IMAGE_FORMATS)} (got {self.image_format!r})")
        if not isinstance(self.addons, dict):
            raise InvalidRequest("addons", "addons must be an object of {name: settings}")

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


def check_text(name: str, text: str) -> None:
    """Refuse a prompt longer than MAX_PROMPT_CHARS, or holding a lone UTF-16 surrogate.

    Refused rather than repaired: a surrogate is half of a character the client meant (an emoji
    cut in two by its own string slicing), so any replacement would generate, and record in the
    infotext, a prompt nobody wrote; the message says where it is so the client can fix its text.
    """
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidRequest(name, f"the {name.replace('_', ' ')} is {len(text)} characters long; "
                                   f"Kiri reads at most {MAX_PROMPT_CHARS}")
    bad = _LONE_SURROGATE.search(text)
    if bad:
        raise InvalidRequest(name, f"the {name.replace('_', ' ')} holds half of a UTF-16 character pair "
                                   f"(U+{ord(bad.group()):04X} at position {bad.start()}), not a character: "
                                   "send whole characters (an emoji is two UTF-16 units)")


def require_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(name, f"{name} must be a whole number (got {value!r})")


def require_range(name: str, value: object, low: int, high: int) -> None:
    require_int(name, value)
    if not low <= value <= high:  # type: ignore[operator]
        raise InvalidRequest(name, f"{name} must be between {low} and {high} (got {value})")
