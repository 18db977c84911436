"""The preprocessor types and their registry: sliders, validation, the control map's size.

Kept apart from ``__init__`` so the module files that build preprocessors import these types
without importing the package that lists them all.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from webui.engine.core.errors import InvalidRequest

from .image import as_rgb, resize_to

# The value sd-webui-controlnet's API clients send for "use the module's default".
DEFAULT_SENTINEL = -1


@dataclass(frozen=True)
class Slider:
    """One of sd-webui-controlnet's module_detail sliders: {"name", "value", "min", "max", "step"}."""

    name: str
    value: float
    min: float
    max: float
    step: float = 1.0

    def __post_init__(self) -> None:
        if not self.min <= self.value <= self.max:
            raise ValueError(f"slider {self.name!r}: default {self.value} outside {self.min}..{self.max}")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "step": self.step}


@dataclass(frozen=True)
class Preprocessor:
    """A named control-map maker.

    ``run(image, resolution, a, b, *, mask=None, services=None)`` gets an HxWx3 uint8 RGB image and
    returns an HxWx3 uint8 control map (the registry resizes it back to the input's size if needed).
    ``a``/``b`` are None when the module has no such slider; ``resolution`` is the validated
    processor_res (the default 512 when the module has no resolution slider, which it then ignores).
    """

    name: str
    run: Callable[..., np.ndarray]
    label: str = ""
    resolution: Slider | None = None
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    needs: str | None = None
    kind: str = "controlnet"
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("controlnet", "ip-adapter"):
            raise ValueError(f"preprocessor {self.name!r}: kind must be 'controlnet' or 'ip-adapter', "
                             f"not {self.kind!r}")


def _number(field: str, value: Any, slider: Slider) -> float:
    wanted = f"{field} must be a number between {slider.min:g} and {slider.max:g} ({slider.name}), got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InvalidRequest(field, wanted)
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(field, wanted) from None
    if not math.isfinite(number):
        raise InvalidRequest(field, f"{field} must be a finite number, got {value!r}")
    return number


def check_value(field: str, value: Any, slider: Slider | None) -> float | None:
    """The slider's value for this request: the default for None or -1, else a number in range.

    A module without this slider ignores whatever the client sent (webuiapi sends threshold_a=64
    and threshold_b=64 for every module), so nothing is checked and None is returned.
    """
    if slider is None:
        return None
    if value is None:
        return slider.value
    number = _number(field, value, slider)
    if number == DEFAULT_SENTINEL and not slider.min <= number <= slider.max:
        return slider.value
    if not slider.min <= number <= slider.max:
        raise InvalidRequest(field, f"{field} {number:g} is outside {slider.min:g}..{slider.max:g} "
                                    f"({slider.name})")
    return number


class Preprocessors:
    """Registry of preprocessors by name; capabilities and extensions add to it."""

    def __init__(self, preprocessors: list[Preprocessor] | tuple[Preprocessor, ...] = ()):
        self._items: dict[str, Preprocessor] = {}
        self._aliases: dict[str, str] = {}
        for p in preprocessors:
            self.add(p)

    def add(self, p: Preprocessor, override: bool = False) -> None:
        """Add `p`; with override it replaces the module of the same name and takes over its aliases."""
        for alias in p.aliases:
            if alias in self._items and alias != p.name:
                raise ValueError(f"alias {alias!r} of {p.name!r} is the name of another preprocessor")
        taken = [n for n in (p.name, *p.aliases) if n in self._items or n in self._aliases]
        if taken and not override:
            raise ValueError(f"preprocessor name {taken[0]!r} is already registered (pass override=True to replace it)")
        for n in (p.name, *p.aliases):
            self._aliases.pop(n, None)
        self._items[p.name] = p
        for alias in p.aliases:
            self._aliases[alias] = p.name

    def get(self, name: str) -> Preprocessor:
        if not isinstance(name, str):
            raise InvalidRequest("module", f"module must be a name, got {name!r}; available: {', '.join(self.names())}")
        key = self._aliases.get(name, name)
        if key not in self._items:
            lowered = name.strip().lower()
            key = next((n for n in self._items if n.lower() == lowered),
                       next((n for a, n in self._aliases.items() if a.lower() == lowered), None))
        if key is None or key not in self._items:
            raise InvalidRequest("module", f"unknown ControlNet preprocessor {name!r}; "
                                           f"available: {', '.join(self.names())}")
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        try:
            self.get(name)  # type: ignore[arg-type]
        except InvalidRequest:
            return False
        return True

    def names(self) -> list[str]:
        """Module names, "none" first, then in the order they were added."""
        return sorted(self._items, key=lambda n: n != "none")

    def detail(self) -> dict[str, dict[str, Any]]:
        """sd-webui-controlnet's module_detail: {name: {"model_free": bool, "sliders": [...]}}.

        model_free keeps sd-webui-controlnet's meaning: the module needs no ControlNet model
        (only its reference-only modules did); every module here feeds a ControlNet or IP-Adapter,
        so it is False. Whether a module needs annotator weights is ``Preprocessor.needs``.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in self.names():
            p = self._items[name]
            sliders = [s.as_json() for s in (p.resolution, p.threshold_a, p.threshold_b) if s is not None]
            out[name] = {"model_free": False, "sliders": sliders}
        return out

    def run(self, name: str, image: Any, resolution: Any = 512, threshold_a: Any = None, threshold_b: Any = None,
            *, mask: Any = None, services: Callable[[str], Any] | None = None) -> np.ndarray:
        """The control map of `image` (any of HxW, HxWx1, HxWx3, HxWx4 uint8) at the image's size."""
        p = self.get(name)
        rgb = as_rgb(image)
        res = check_value("processor_res", resolution, p.resolution)
        a = check_value("threshold_a", threshold_a, p.threshold_a)
        b = check_value("threshold_b", threshold_b, p.threshold_b)
        if p.needs and (services is None or services(p.needs) is None):
            raise InvalidRequest("module", f"{p.name} needs a {p.needs} model in models/annotators/{p.needs}; "
                                           f"none is installed")
        result = p.run(rgb, int(round(res)) if res is not None else 512, a, b, mask=mask, services=services)
        result = as_rgb(np.asarray(result))
        if result.shape[:2] != rgb.shape[:2]:
            result = resize_to(result, rgb.shape[:2], kind="smooth")
        return result
