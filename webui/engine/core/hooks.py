"""Hooks extensions attach to: the moments AUTOMATIC1111's callbacks cover, with plain signatures.

A hook that raises is logged and skipped: one broken extension must not break generation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    """What on_step hooks see: read-only progress and a detached copy of the latents."""

    job_id: str
    step: int
    steps: int
    batch_no: int
    latents: Any  # torch.Tensor, cloned; changing it changes nothing


@dataclass
class Hooks:
    on_app_started: list[Callable[..., None]] = field(default_factory=list)  # (app, engine)
    on_model_loaded: list[Callable[..., None]] = field(default_factory=list)  # (loaded_model)
    before_generate: list[Callable[..., Any]] = field(default_factory=list)  # (request) -> request | None
    after_generate: list[Callable[..., Any]] = field(default_factory=list)  # (request, images) -> images | None, per batch
    on_step: list[Callable[[StepInfo], None]] = field(default_factory=list)

    def notify(self, name: str, *args: Any) -> None:
        for hook in list(getattr(self, name)):
            _call(hook, name, *args)

    def transform(self, name: str, value: Any, *args: Any) -> Any:
        """Pass `value` through each hook in turn; a hook returning None keeps it unchanged."""
        for hook in list(getattr(self, name)):
            changed = _call(hook, name, *args, value) if args else _call(hook, name, value)
            if changed is not None:
                value = changed
        return value


def _call(hook: Callable[..., Any], name: str, *args: Any) -> Any:
    try:
        return hook(*args)
    except Exception:  # noqa: BLE001 - isolate extensions from the engine
        log.exception("%s hook %s failed; skipped", name, getattr(hook, "__qualname__", hook))
        return None
