"""Segmentation: masks from words, clicks or a box, as a job of the fair queue.

The one public module of the capability: the typed request and result, the list of segmenters,
`segment()` and the mask tools. The UI tab, the /kiri/v1/segment route and the /sam/* routes of
AUTOMATIC1111's segment-anything extension all map onto `SegmentRequest` and call `segment()`.

    request = SegmentRequest(image, prompt="the red circle")   # or points=[[x, y, 1]], box=[x0, y0, x1, y1]
    result = segment(engine, request, owner="alice")
    result.masks[0]  # PIL mode L, the image's size, 255 inside

Segmenters: the folders of models/segmentation/ (each detected from its config.json, see
backends.py) and two that need no weights, always there: flood fill (clicks) and GrabCut (a box).
A request that names no model gets the best one for its prompt: a text prompt the first folder
taking text (CLIPSeg, SAM 3, Grounding DINO), clicks or a box the first SAM (else flood fill or
GrabCut), no prompt a semantic or panoptic model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator

import numpy as np

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.jobs import Job
from webui.engine.core.text import check_text

from . import masks as mask_tools
from .backends import Detected, detect
from .classic import flood_fill, grabcut

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.registries import Registries

__all__ = ["SegmentRequest", "SegmentResult", "Segmenter", "segmenters", "find_segmenter", "segment", "segment_stage", "save_result",
           "trackers", "track",
           "mask_tools", "PROMPT_KINDS", "FLOOD_FILL", "GRABCUT"]

KIND = "segmenter"  # the catalog's model kind (models/segmentation/)
PROMPT_KINDS = ("text", "points", "box", "none")
FLOOD_FILL, GRABCUT = "flood-fill", "grabcut"
MAX_POINTS = 64
MAX_PROMPT_CHARS = 1000
# When several segmenters take a prompt kind, which kinds are tried first.
PREFERENCE = {
    "text": ("clipseg", "sam3", "grounding-dino"),
    "points": ("sam2", "sam", "builtin"),
    "box": ("sam2", "sam", "sam3", "builtin"),
    "none": ("universal", "semantic"),
}


@dataclass(frozen=True)
class Segmenter:
    name: str
    kind: str  # clipseg, sam, sam2, sam3, grounding-dino, semantic, universal, builtin
    prompts: tuple[str, ...]
    problem: str | None = None  # set when its folder cannot be used

    def takes(self) -> str:
        return " and ".join({"text": "a text prompt", "points": "clicks (points)", "box": "a box",
                             "none": "no prompt (it labels the whole picture)"}[p] for p in self.prompts)

    def plain(self) -> dict:
        answer = {"name": self.name, "kind": self.kind, "prompts": list(self.prompts)}
        if self.problem:
            answer["problem"] = self.problem
        return answer


BUILTINS = (Segmenter(FLOOD_FILL, "builtin", ("points",)), Segmenter(GRABCUT, "builtin", ("box", "points")))


@dataclass
class SegmentRequest:
    """What to segment and how. Give any of prompt, points ([x, y, 1 inside | 0 outside]) and box
    ([x0, y0, x1, y1] in pixels, x1/y1 exclusive); model None picks the best for the prompt."""

    image: Any = None  # PIL image
    prompt: str | None = None
    points: list | None = None
    box: list | None = None
    model: str | None = None
    threshold: float = 0.5

    def prompt_kinds(self) -> tuple[str, ...]:
        kinds = tuple(k for k, v in (("text", self.prompt), ("points", self.points), ("box", self.box)) if v)
        return kinds or ("none",)

    def validate(self) -> None:
        from PIL import Image

        if not isinstance(self.image, Image.Image):
            raise InvalidRequest("image", "the image is missing or is not an image: upload a PNG, JPEG or WebP picture")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidRequest("prompt", "prompt must be text")
        if self.prompt is not None:
            self.prompt = self.prompt.strip() or None
        if self.prompt is not None:
            check_text("prompt", self.prompt, MAX_PROMPT_CHARS)  # a lone surrogate would fail in the tokenizer
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold) or not 0 <= self.threshold <= 1:
            raise InvalidRequest("threshold", f"threshold must be a number from 0 to 1 (got {self.threshold!r})")
        self.threshold = float(self.threshold)
        w, h = self.image.size
        self.points = self._points(w, h) or None
        self.box = self._box(w, h)
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidRequest("model", "model must be a segmenter name")

    def _points(self, w: int, h: int) -> list[tuple[float, float, int]]:
        if self.points is None:
            return []
        if not isinstance(self.points, (list, tuple)):
            raise InvalidRequest("points", "points must be a list of [x, y, 1|0]")
        if len(self.points) > MAX_POINTS:
            raise InvalidRequest("points", f"at most {MAX_POINTS} points")
        out = []
        for index, point in enumerate(self.points):
            if not isinstance(point, (list, tuple)) or len(point) not in (2, 3) or not all(_number(v) for v in point):
                raise InvalidRequest("points", f"point {index + 1} must be [x, y] or [x, y, 1|0] (got {str(point)[:80]})")
            x, y = float(point[0]), float(point[1])
            label = int(point[2]) if len(point) == 3 else 1
            if label not in (0, 1) or (len(point) == 3 and float(point[2]) != label):
                raise InvalidRequest("points", f"point {index + 1}: the third value is 1 (inside) or 0 (outside), not {point[2]!r}")
            if not (0 <= x < w and 0 <= y < h):
                raise InvalidRequest("points", f"point {index + 1} ({x:g}, {y:g}) is outside the {w}x{h} image")
            out.append((x, y, label))
        return out

    def _box(self, w: int, h: int) -> tuple[float, float, float, float] | None:
        if self.box is None:
            return None
        if not isinstance(self.box, (list, tuple)) or len(self.box) != 4 or not all(_number(v) for v in self.box):
            raise InvalidRequest("box", "box must be [x0, y0, x1, y1] in pixels")
        x0, y0, x1, y1 = (float(v) for v in self.box)
        if x1 <= x0 or y1 <= y0:
            raise InvalidRequest("box", f"box {[x0, y0, x1, y1]} is empty: x1 must be above x0 and y1 above y0")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise InvalidRequest("box", f"box {[x0, y0, x1, y1]} reaches outside the {w}x{h} image")
        return (x0, y0, x1, y1)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SegmentResult:
    masks: list = field(default_factory=list)  # PIL images, mode L, the image's size, 255 inside
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # model, kind, prompt, points, box, threshold, seconds

    def arrays(self) -> list[np.ndarray]:
        return [mask_tools.to_array(m) for m in self.masks]

    def describe(self, index: int | None = None) -> str:
        """What made the masks (or mask `index`), as one line of `Key: value` pairs."""
        info = {k: v for k, v in self.info.items() if v not in (None, [], "") and k != "seconds"}
        if index is not None:
            info.update(label=self.labels[index], score=round(self.scores[index], 4))
        return ", ".join(f"{k.capitalize()}: {json.dumps(v) if not isinstance(v, (int, float)) else v}" for k, v in info.items())


# --- the segmenters -------------------------------------------------------------------------

def segmenters(engine: "Engine") -> list[Segmenter]:
    """Every segmenter: the folders of models/segmentation/ (scanned if not yet), then the built-ins."""
    if not engine.catalog.of_kind(KIND):
        engine.catalog.scan()
    found = []
    for entry in engine.catalog.of_kind(KIND):
        detected: Detected = detect(entry.path)
        found.append(Segmenter(entry.name, detected.kind or "unknown", detected.prompts, detected.problem))
    return found + list(BUILTINS)


def find_segmenter(engine: "Engine", name: str | None, kinds: tuple[str, ...], field: str = "model") -> Segmenter:
    """The segmenter called `name`, checked to take the request's prompt kinds; or the best for them."""
    every = segmenters(engine)
    if name:
        for segmenter in every:
            if segmenter.name == name.strip():
                _check_takes(segmenter, kinds, field)
                return segmenter
        engine.catalog.scan()
        every = segmenters(engine)
        for segmenter in every:
            if segmenter.name == name.strip():
                _check_takes(segmenter, kinds, field)
                return segmenter
        names = ", ".join(s.name for s in every)
        raise InvalidRequest(field, f"unknown segmenter {name[:100]!r}; available: {names}")
    usable = [s for s in every if s.problem is None and all(k in s.prompts for k in kinds)]
    main = kinds[0] if kinds != ("points", "box") else "box"
    for kind in PREFERENCE.get(main, ()):
        for segmenter in usable:
            if segmenter.kind == kind:
                return segmenter
    if usable:
        return usable[0]
    what = {"text": "a text prompt", "points": "clicks", "box": "a box", "none": "no prompt"}
    field_of = {"text": "prompt", "points": "points", "box": "box", "none": "prompt"}
    if kinds == ("none",):
        raise InvalidRequest("prompt", "give a prompt, points or a box (no segmenter in models/segmentation/ labels a "
                                       "whole picture without one)")
    raise InvalidRequest(field_of[kinds[0]], f"no segmenter takes {' with '.join(what[k] for k in kinds)}: add one to "
                                             "models/segmentation/ (CLIPSeg or SAM 3 for words, SAM for clicks and boxes)")


def _check_takes(segmenter: Segmenter, kinds: tuple[str, ...], field: str) -> None:
    if segmenter.problem:
        raise InvalidRequest(field, f"{segmenter.name} cannot be used: {segmenter.problem}")
    field_of = {"text": "prompt", "points": "points", "box": "box"}
    for kind in kinds:
        if kind not in segmenter.prompts:
            name = field_of.get(kind, "prompt")
            if kind == "none":
                raise InvalidRequest("prompt", f"{segmenter.name} needs a prompt: it takes {segmenter.takes()}")
            raise InvalidRequest(name, f"{segmenter.name} does not take {name}: it takes {segmenter.takes()}")


# --- running --------------------------------------------------------------------------------

def segment(engine: "Engine", request: SegmentRequest, owner: str = "local", job: Job | None = None) -> SegmentResult:
    """Segment as a job of `owner` in the fair queue; checks the request in the caller's thread first."""
    job = job or Job(kind="segment", owner=owner)
    return engine.run_kind("segment", request, job)  # through the engine's dispatcher (Ray Serve replicas)


def segment_work(engine: "Engine", request: SegmentRequest):
    """The job kind's work: the request checked in the caller's thread, then the segmenter's turns."""
    from webui.engine.core.images import to_rgb
    from webui.engine.core.limits import check_input

    request.validate()
    check_input("image", request.image.width, request.image.height, limit=engine.settings.max_pixels)
    request.image = to_rgb(request.image, "image")
    segmenter = find_segmenter(engine, request.model, request.prompt_kinds())
    return lambda job: _work(engine, request, segmenter, job)


def segment_stage(engine: "Engine", request: SegmentRequest, job: Job) -> Generator[None, None, SegmentResult]:
    """Segment as turns of another job (`result = yield from segment_stage(...)` inside its work: the
    detailer finds its regions so); the request is checked as segment() checks it."""
    from webui.engine.core.images import to_rgb
    from webui.engine.core.limits import check_input

    request.validate()
    check_input("image", request.image.width, request.image.height, limit=engine.settings.max_pixels)
    request.image = to_rgb(request.image, "image")
    segmenter = find_segmenter(engine, request.model, request.prompt_kinds())
    return (yield from _work(engine, request, segmenter, job))


def _work(engine: "Engine", request: SegmentRequest, segmenter: Segmenter, job: Job) -> Generator[None, None, SegmentResult]:
    """1. load the model (one turn); 2. run it (the next turn); 3. masks as L images."""
    started = time.perf_counter()
    job.start_batch(1, 2)
    backend = None
    if segmenter.kind != "builtin":
        backend = _models(engine).get_of_kind(KIND, segmenter.name)
        job.advance(1)
        yield
    image = request.image
    if segmenter.name == FLOOD_FILL:
        found = [(flood_fill(image, request.points, request.threshold), "flood fill", 1.0)]
    elif segmenter.name == GRABCUT:
        found = [(grabcut(image, request.box, request.points or []), "grabcut", 1.0)]
    else:
        found = backend.model.run(image, request, helper=lambda kind: _helper(engine, kind))
    found = [f for f in found if f[0].any()]
    job.advance(2)
    job.finish_images(len(found))
    info = {"model": segmenter.name, "kind": segmenter.kind, "prompt": request.prompt,
            "points": [list(p) for p in request.points or []], "box": list(request.box) if request.box else None,
            "threshold": request.threshold, "seconds": round(time.perf_counter() - started, 3)}
    return SegmentResult([mask_tools.to_image(m) for m, _, _ in found], [label for _, label, _ in found],
                         [float(score) for _, _, score in found], info)


def _models(engine: "Engine"):
    """The model manager, which loads segmenters through the loader register() added."""
    return engine.models


def _load(entry, device, allow_pickle: bool):
    from .backends import load

    return load(entry, device, allow_pickle)


def register(registries: "Registries") -> None:
    """Segmenter folders for the model manager (models/segmentation/, catalogued as kind segmenter), and
    segmentation as a job kind (plain data can ask for it; a dispatcher may run it elsewhere)."""
    from webui.engine.core.job_kinds import JobKind

    registries.add_loader(KIND, _load)
    registries.add_job_kind(JobKind("segment", SegmentRequest, segment_work, result_type=SegmentResult))


def _helper(engine: "Engine", prompt_kind: str):
    """Another loaded segmenter a backend leans on (Grounding DINO's boxes cut out by SAM)."""
    for segmenter in segmenters(engine):
        if segmenter.kind in ("sam2", "sam") and segmenter.problem is None and prompt_kind in segmenter.prompts:
            return _models(engine).get_of_kind(KIND, segmenter.name).model
    return None


# --- saving ---------------------------------------------------------------------------------

def trackers(engine: "Engine") -> list[str]:
    """Segmenters that follow a clicked object through a clip: SAM 2 video models (config model_type
    sam2_video, as facebook/sam2.1-* folders are)."""
    import json

    found = []
    for segmenter in segmenters(engine):
        entry = engine.catalog.find_of_kind(KIND, segmenter.name) if segmenter.kind == "sam2" else None
        if entry is None or segmenter.problem is not None:
            continue
        try:
            if json.loads((entry.path / "config.json").read_text()).get("model_type") == "sam2_video":
                found.append(segmenter.name)
        except (OSError, ValueError):
            continue
    return found


def track(engine: "Engine", frames, points: list | None = None, box: list | None = None, model: str | None = None,
          keep_going=lambda: True):
    """Masks (H x W bool arrays) of the object clicked ([[x, y, 1 | 0], ...]) or boxed on the first of
    `frames`, through all of them; a generator, run inside the caller's job (the Video tab's turns)."""
    names = trackers(engine)
    name = model or (names[0] if names else None)
    if name is None or name not in names:
        raise InvalidRequest("mask_points", "following a click through a clip needs a SAM 2 video model in "
                                            "models/segmentation/ (config model_type sam2_video, e.g. facebook/sam2.1-*)"
                             + (f"; {name!r} is not one" if name else ""))
    backend = _models(engine).get_of_kind(KIND, name).model
    points = points or []
    return backend.track(frames, [[float(x), float(y)] for x, y, _ in points], [int(label) for _, _, label in points],
                         box, keep_going)


def save_result(result: SegmentResult, image: "Image.Image", outputs_dir: Path) -> list[Path]:
    """The picture and each mask beside it (`00012-0.png`, `00012-0-mask1.png`, ...), each mask's PNG
    carrying what made it; returns the paths (the picture first)."""
    from webui.engine.core.infotext import pnginfo_for
    from webui.engine.core.outputs import dated_dir, save_image

    directory = dated_dir(outputs_dir, "segment")
    picture = save_image(image.convert("RGB"), directory, result.describe(), 0)
    paths = [picture]
    for index, mask in enumerate(result.masks):
        path = picture.with_name(f"{picture.stem}-mask{index + 1}.png")
        tmp = path.with_name("." + path.name + ".tmp")
        mask.save(tmp, format="PNG", pnginfo=pnginfo_for(result.describe(index)))
        tmp.replace(path)
        paths.append(path)
    return paths
