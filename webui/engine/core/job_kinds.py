"""Job kinds that plain data can ask for (POST /kiri/v1/jobs, a Ray Serve worker): each a request
class, how to build it from plain data, and its work for the job store.

Every kind is registered by its capability's `register(registries)`, exactly as an extension
would (generation: txt2img, img2img; video: txt2video, vid2vid, interpolate). Another capability
can extend a kind with a variant for the requests it serves (upscale: txt2img with a hires fix,
img2img with SD upscale), so the kind's owner need not know it:

    registries.add_job_kind(JobKind("txt2video", Txt2VideoRequest, txt2video_work, load=...))
    registries.extend_job_kind("txt2img", when=lambda r: r.hires is not None, work=hires_job)
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
    # (engine, request) -> request, before a variant is chosen and the work made (generation: the
    # before_generate hooks, then validation).
    prepare: Callable[[Any, Any], Any] | None = None
    # the result class, built back from the plain data kept on disk (core/results.py) for a caller that
    # waits after the job gave its result away; None: such a caller gets the plain data itself.
    result_type: type | None = None
    # request -> whether its work runs its pieces through engine.part_work (vid2vid: each frame), so a
    # dispatcher keeps the job where it was asked and sends the pieces; None: never
    parts: Callable[[Any], bool] | None = None
    # a piece of another kind's job (an SD upscale's tile, a vid2vid frame): what a dispatcher sends its
    # replicas (engine.submit_spec); not listed, and a client's request for it is refused (submit_plain)
    internal: bool = False

    def request_from(self, data: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
        """The request; images in it checked against `max_pixels` before decoding (a custom `load`
        decodes with plain.load's default budget, and the kind's work checks Settings again)."""
        return self.load(data) if self.load is not None else load_plain(self.request_type, data, max_pixels)


@dataclass(frozen=True)
class Variant:
    when: Callable[[Any], bool]  # request -> whether this variant serves it
    work: Callable[[Any, Any], Callable]  # as JobKind.work
    source: str = "built-in"
    # its work runs its pieces through engine.part_work (SD upscale: each tile), so a dispatcher keeps
    # the job where it was asked and sends the pieces instead of the whole job
    parts: bool = False


@dataclass
class JobKinds:
    kinds: dict[str, JobKind] = field(default_factory=dict)
    variants: dict[str, list[Variant]] = field(default_factory=dict)

    def extend(self, name: str, variant: Variant) -> None:
        """A variant of kind `name` for the requests `variant.when` picks (the first registered wins)."""
        self.variants.setdefault(name, []).append(variant)

    def work_for(self, engine: Any, name: str, request: Any) -> tuple[Any, Callable]:
        """(the prepared request, its work): the kind's prepare, then the first variant that serves it,
        else the kind's own work. Raises KeyError for an unknown kind."""
        kind = self.kinds[name]
        if kind.prepare is not None:
            request = kind.prepare(engine, request)
        for variant in self.variants.get(name, []):
            if variant.when(request):
                return request, variant.work(engine, request)
        return request, kind.work(engine, request)

    def runs_parts(self, name: str, request: Any) -> bool:
        """Whether the work that serves `request` runs its pieces as parts: the variant that serves it
        (Variant.parts), else the kind (JobKind.parts)."""
        for variant in self.variants.get(name, []):
            if variant.when(request):
                return variant.parts
        kind = self.kinds.get(name)
        return bool(kind is not None and kind.parts is not None and kind.parts(request))

    def register(self, kind: JobKind) -> None:
        if kind.name in self.kinds:
            raise ValueError(f"job kind {kind.name!r} is registered already")
        self.kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        return self.kinds.get(name)

    def names(self) -> list[str]:
        """The kinds a client may ask for (not the internal ones)."""
        return [name for name, kind in self.kinds.items() if not kind.internal]
