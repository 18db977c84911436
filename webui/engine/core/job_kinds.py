"""Job kinds that plain data can ask for (POST /kiri/v1/jobs, a Ray Serve worker): each a request
class, how to build it from plain data, and its work for the job store.

Built-in capabilities register here exactly as an extension would; the engine's own txt2img and
img2img need no entry (Engine.submit_plain knows them).

    registries.job_kinds.register(JobKind("txt2video", Txt2VideoRequest, txt2video_work, load=...))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from webui.engine.core.limits import DEFAULT_MAX_PIXELS
from webui.engine.core.plain import load as load_plain


@dataclass(frozen=True)
class JobKind:
    name: str
    request_type: type
    # (engine, request) -> work: validates in the caller's thread (a bad request is refused before it
    # is queued) and returns the generator function the job store runs.
    work: Callable[[Any, Any], Callable]
    # plain dict -> request; the default builds the dataclass from its fields (images as __image__).
    load: Callable[[dict], Any] | None = None

    def request_from(self, data: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
        """The request; images in it checked against `max_pixels` before decoding (a custom `load`
        decodes with plain.load's default budget, and the kind's work checks Settings again)."""
        return self.load(data) if self.load is not None else load_plain(self.request_type, data, max_pixels)


@dataclass
class JobKinds:
    kinds: dict[str, JobKind] = field(default_factory=dict)

    def register(self, kind: JobKind) -> None:
        if kind.name in self.kinds:
            raise ValueError(f"job kind {kind.name!r} is registered already")
        self.kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        return self.kinds.get(name)

    def names(self) -> list[str]:
        return list(self.kinds)
