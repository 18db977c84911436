"""Step caching: reuse the denoiser's work from one step to the next (diffusers' cache hooks), per
request, as the add-on "step_cache"; off unless a request or the `step_cache` setting asks for it.

A request names it in `addons`, as a method and its parameters, or as the infotext's text:

    {"step_cache": {"method": "first_block_cache", "threshold": 0.05}}
    {"step_cache": "taylorseer 2 warmup=3"}      # the method's main parameter bare, the others k=v
    {"step_cache": "off"}                        # none, even when the setting names one

The hooks are put on the shared denoiser in `apply` and taken off in `release`, so every call starts
with fresh cache state and other users' turns between batches never see them. See methods.py for
what each method does and which denoisers take it.
"""

from __future__ import annotations

from typing import Any

from webui.engine.core.addons import Addon, AddonSpec
from webui.engine.core.errors import InvalidRequest

from .methods import METHODS, Hooked, Method, denoiser_of, install, kind_of

__all__ = ["INFOTEXT_KEY", "METHODS", "NAME", "StepCache", "parse", "register", "text_of"]

NAME = "step_cache"
INFOTEXT_KEY = "Step cache"
FIELD = "step_cache"
OFF = ("", "off", "none")


def parse(value: Any) -> dict[str, Any] | None:
    """Settings (a dict or the infotext's text) -> {"method": ..., its parameters, checked}; None: off."""
    if value is None or value is False:
        return None
    if isinstance(value, str):
        value = _from_text(value)
        if value is None:
            return None
    if not isinstance(value, dict):
        raise InvalidRequest(FIELD, f"step cache settings must be a method name or an object with a method (got {value!r})")
    method_name = value.get("method")
    if isinstance(method_name, str) and method_name.strip().lower() in OFF:
        return None
    method = METHODS.get(method_name) if isinstance(method_name, str) else None
    if method is None:
        raise InvalidRequest(f"{FIELD}.method", f"unknown step cache method {method_name!r}; one of {', '.join(METHODS)}")
    unknown = [k for k in value if k != "method" and k not in method.params]
    if unknown:
        raise InvalidRequest(f"{FIELD}.{unknown[0]}", f"{method.name} takes {', '.join(method.params)}, not {unknown[0]!r}")
    checked: dict[str, Any] = {"method": method.name}
    for key, param in method.params.items():
        checked[key] = param.check(f"{FIELD}.{key}", value.get(key, param.default))
    method.check_together(checked, FIELD)
    return checked


def _from_text(text: str) -> dict[str, Any] | None:
    words = text.split()
    if not words or words[0].lower() in OFF:
        return None
    method = METHODS.get(words[0])
    if method is None:
        raise InvalidRequest(f"{FIELD}.method", f"unknown step cache method {words[0]!r}; one of {', '.join(METHODS)}")
    settings: dict[str, Any] = {"method": method.name}
    for i, word in enumerate(words[1:]):
        key, sep, raw = word.partition("=")
        if not sep:
            if i > 0:
                raise InvalidRequest(FIELD, f"only the first parameter may be given without a name (got {word!r})")
            key, raw = method.main, word
        settings[key] = _number(raw)
    return settings


def _number(raw: str) -> Any:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw  # the parameter's check names it


def text_of(settings: dict[str, Any]) -> str:
    """The infotext's text: the method, its main parameter bare, the others that differ from the default k=v."""
    method = METHODS[settings["method"]]
    parts = [method.name, _shown(settings[method.main])]
    parts += [f"{k}={_shown(settings[k])}" for k, p in method.params.items()
              if k != method.main and settings[k] != p.default]
    return " ".join(parts)


def _shown(value: Any) -> str:
    return "-".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


class StepCache(Addon):
    name = NAME

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.method: Method = METHODS[settings["method"]]
        self._hooked: Hooked | None = None

    @classmethod
    def from_settings(cls, value: Any) -> "StepCache | None":
        checked = parse(value)
        return None if checked is None else cls(checked)

    def prepare(self, model: Any, request: Any) -> None:
        # Refused before the first batch: a denoiser the method cannot hook, named with the model.
        self.method.check_denoiser(denoiser_of(model.pipeline), model.name, f"{FIELD}.method")

    def apply(self, call: Any) -> None:
        denoiser = denoiser_of(call.pipeline)
        self.method.check_denoiser(denoiser, "this model", f"{FIELD}.method")
        self._hooked = install(self.method, denoiser, self.settings)
        call.infotext.update(self.infotext())

    def release(self, call: Any) -> None:
        hooked, self._hooked = self._hooked, None
        if hooked is not None:
            hooked.remove()

    def infotext(self) -> dict[str, object]:
        return {INFOTEXT_KEY: text_of(self.settings)}


def register(registries: Any) -> None:
    """Called by bootstrap.build_registries, as an extension's entry would."""
    registries.add_addon(AddonSpec(NAME, StepCache.from_settings, (INFOTEXT_KEY,),
                                   default=lambda settings: getattr(settings, "step_cache", "") or None))


def denoiser_kind(pipeline: Any) -> str:
    return kind_of(denoiser_of(pipeline))
