"""The detailer as a stage after the main pass (and after hires fix): for each picture, each unit
finds its regions (a segmenter, by word or by name), and each region is inpainted "only masked" at
the model's native size through generation's own image-to-image task: a turn of the fair queue per
region, pasted back with the task's feathered mask, so pixels outside every mask are unchanged."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator

import numpy as np

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import build_infotext, parse_infotext
from webui.engine.core.outputs import dated_dir, save_image
from webui.engine.generation.img2img import Img2ImgRequest, Img2ImgTask, prepare
from webui.engine.generation.jobs import stage
from webui.engine.generation.requests import GenerationResult, random_seed
from webui.engine.generation.runner import kept_sources
from webui.engine.segment import SegmentRequest, find_segmenter, segment_stage, segmenters

from ._regions import region_prompts, unit_regions
from ._units import KNOWN_MODELS, NAME, VERSION, DetailerSettings, DetailerUnit, unit_infotext

if TYPE_CHECKING:
    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job

DETECTOR_FILES = (".pt", ".pth", ".safetensors", ".onnx")
# add-ons of the main pass a region's inpaint leaves out: their pictures are the whole picture's, not the crop's
WHOLE_PICTURE_ADDONS = ("controlnet", "ip_adapter")


@dataclass(frozen=True)
class Detector:
    segmenter: str | None  # None: the best segmenter that takes words
    word: str
    note: str = ""


def detector_for(engine: "Engine", unit: DetailerUnit, where: str) -> Detector:
    """What finds a unit's regions, checked before the job is queued: a segmenter by name (with the
    word in ad_model_classes), ADetailer's detector file by the word it was trained on, or a word."""
    name = unit.ad_model.strip()
    every = {s.name: s for s in segmenters(engine)}
    if name in every:
        segmenter = every[name]
        if segmenter.problem:
            raise InvalidRequest(f"{where}.ad_model", f"{name} cannot be used: {segmenter.problem}")
        if "text" not in segmenter.prompts:
            raise InvalidRequest(f"{where}.ad_model", f"{name} does not find objects by words; choose one of "
                                 + ", ".join(s.name for s in every.values() if "text" in s.prompts and not s.problem))
        word = unit.ad_model_classes.strip()
        if not word:
            raise InvalidRequest(f"{where}.ad_model_classes",
                                 f"say what {name} should find (a word or phrase: face, hand, the star)")
        return Detector(name, word)
    stem = Path(name).stem.lower()
    known = next((word for prefix, word in KNOWN_MODELS.items() if stem.startswith(prefix)), None)
    note = ""
    if known is not None:
        word = unit.ad_model_classes.strip() or known
        note = f"{name}: Kiri reads no YOLO detection files; the unit finds {word!r} by its word"
    elif name.lower().endswith(DETECTOR_FILES):
        raise InvalidRequest(f"{where}.ad_model", f"{name!r} is a detection file Kiri does not read (YOLO needs "
                             "ultralytics); use a word (face, hand, the star) or a segmenter: "
                             + ", ".join(s.name for s in every.values() if "text" in s.prompts and not s.problem))
    else:
        word = name
    try:
        find_segmenter(engine, None, ("text",))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}.ad_model", exc.message if hasattr(exc, "message") else str(exc)) from None
    return Detector(None, word, note)


def detect(engine: "Engine", picture: Any, detector: Detector, unit: DetailerUnit, job: "Job"):
    """The segmenter's masks (bool arrays) for the unit's word on `picture`, as turns of `job`."""
    request = SegmentRequest(picture, prompt=detector.word, model=detector.segmenter, threshold=float(unit.ad_confidence))
    result = yield from segment_stage(engine, request, job)
    return [np.asarray(m) > 0 for m in result.arrays()]


def region_size(engine: "Engine", unit: DetailerUnit, model: str | None) -> tuple[int, int]:
    """The size a region is redrawn at: the unit's inpaint size, else the checkpoint's native size."""
    if unit.ad_use_inpaint_width_height:
        return unit.ad_inpaint_width, unit.ad_inpaint_height
    try:
        entry = engine.catalog.find(model) if model else engine.current_entry()
        side = int(getattr(entry, "native_size", 512) or 512)
    except Exception:  # noqa: BLE001 - the model is named again when the region's pass loads it
        side = 512
    side = max(64, side // 8 * 8)
    return side, side


def detail_work(engine: "Engine", request: Any, kind: str, settings: DetailerSettings,
                detectors: dict[int, Detector], inner: Callable[["Job"], Generator]) -> Callable:
    """The job's work: the main pass (`inner`, not saved), then the detailer over each picture."""

    def work(job: "Job") -> Generator[None, None, GenerationResult]:
        main = yield from inner(job)
        result = GenerationResult(warnings=list(main.warnings), model_name=main.model_name, model_hash=main.model_hash,
                                  sampler_name=main.sampler_name, schedule=main.schedule, interrupted=main.interrupted)
        result.warnings.extend(w for w in settings.warnings if w not in result.warnings)
        result.warnings.extend(d.note for d in detectors.values() if d.note and d.note not in result.warnings)
        save = engine.settings.save_images if request.save_images is None else request.save_images
        out_dir = dated_dir(engine.outputs_for(job.owner), kind)
        extension = request.image_format or engine.settings.image_format
        before: list[tuple[Any, str, int]] = []
        # the main pass kept none: the request's pictures and its add-ons' (ControlNet units') kept here
        sources = kept_sources(engine, job.owner, request, engine.addons.build(
            request.addons, request.prompt, request.negative_prompt)) if save and main.images else {}
        for image, info, seed in zip(main.images, main.infotexts, main.seeds):
            picture, params = yield from detail_one(engine, request, settings, detectors, image, seed, main, job, result.warnings)
            text = parse_infotext(info)
            merged = {**text.params, **sources, **params}
            infotext = build_infotext(text.prompt, text.negative_prompt, merged)
            path = save_image(picture, out_dir, infotext, seed, extension) if save else None
            result.add(picture, infotext, seed, path)
            before.append((image, info, seed))
        if settings.show_before:  # the UI's before/after view: the main pass follows the detailed pictures
            for image, info, seed in before:  # saved too when the others are (ADetailer's "save images before")
                path = save_image(image, out_dir, info, seed, extension) if save else None
                result.add(image, info, seed, path)
        result.interrupted = result.interrupted or job.interrupted
        return result

    return work


def detail_one(engine: "Engine", request: Any, settings: DetailerSettings, detectors: dict[int, Detector], image: Any,
               seed: int, main: GenerationResult, job: "Job", warnings: list[str]):
    """One picture through every enabled unit: (the detailed picture, its ADetailer infotext keys)."""
    picture = image.convert("RGB")
    params: dict[str, object] = {}
    for index, unit in settings.active:
        if job.interrupted:
            break
        masks = yield from detect(engine, picture, detectors[index], unit, job)
        regions = unit_regions(masks, unit)
        prompts = region_prompts(unit.ad_prompt, len(regions))
        negatives = region_prompts(unit.ad_negative_prompt, len(regions))
        done = 0
        for number, region in enumerate(regions):
            if job.interrupted:
                break
            redrawn = yield from inpaint_region(engine, request, unit, picture, region, prompts[number] or request.prompt,
                                                negatives[number] or request.negative_prompt, seed, main, job, warnings)
            if redrawn is None:
                break
            picture, done = redrawn, done + 1
        params.update(unit_infotext(index, unit, done))
        if not regions:
            note = f"ADetailer unit {index + 1} ({unit.ad_model}) found no region: the picture is as the main pass left it"
            if note not in warnings:
                warnings.append(note)
    if params:
        params["ADetailer version"] = VERSION
    return picture, params


def inpaint_region(engine: "Engine", request: Any, unit: DetailerUnit, picture: Any, region: np.ndarray, prompt: str,
                   negative: str, seed: int, main: GenerationResult, job: "Job", warnings: list[str]):
    """One region inpainted "only masked" by generation's image-to-image task (a turn of the queue);
    None when the job was interrupted before it finished."""
    from PIL import Image

    model = unit.ad_checkpoint if unit.ad_use_checkpoint and unit.ad_checkpoint else (main.model_name or request.model)
    width, height = region_size(engine, unit, model)
    addons = {k: v for k, v in request.addons.items() if k != NAME and k not in WHOLE_PICTURE_ADDONS}
    if not unit.ad_inpaint_only_masked:
        note = "ad_inpaint_only_masked false: Kiri's detailer always redraws only the masked region, at the region's size"
        if note not in warnings:
            warnings.append(note)
    region_request = Img2ImgRequest(
        prompt=prompt, negative_prompt=negative,
        sampler_name=unit.ad_sampler if unit.ad_use_sampler else (main.sampler_name or request.sampler_name),
        scheduler=request.scheduler, steps=unit.ad_steps if unit.ad_use_steps else request.steps,
        cfg_scale=unit.ad_cfg_scale if unit.ad_use_cfg_scale else request.cfg_scale, seed=seed, width=width,
        height=height, model=model, addons=addons, save_images=False, image_format=request.image_format,
        init_image=picture, mask=Image.fromarray(region.astype(np.uint8) * 255, "L"), mask_blur=unit.ad_mask_blur,
        inpainting_fill=1, inpaint_full_res=True, inpaint_full_res_padding=unit.ad_inpaint_only_masked_padding,
        denoising_strength=unit.ad_denoising_strength,
    )
    own: list[str] = []
    plan = prepare(region_request, own)
    if unit.ad_controlnet_model not in ("", "None"):
        if "controlnet" in engine.addons.names():
            x0, y0, x1, y1 = plan.box
            region_request.addons["controlnet"] = [dict(
                enabled=True, image=picture.crop((x0, y0, x1, y1)), module=unit.ad_controlnet_module or "none",
                model=unit.ad_controlnet_model, weight=unit.ad_controlnet_weight,
                guidance_start=unit.ad_controlnet_guidance_start, guidance_end=unit.ad_controlnet_guidance_end)]
        else:
            note = "ad_controlnet_model: no ControlNet add-on is installed; not applied"
            if note not in warnings:
                warnings.append(note)
    task = Img2ImgTask(region_request, plan)
    done = yield from stage(engine, task, job)
    warnings.extend(w for w in own + done.warnings if w not in warnings)
    if not done.images:
        return None
    return done.images[0].convert("RGB")


def kept_as_is(engine: "Engine", request: Any) -> Callable[["Job"], Generator]:
    """img2img with skip_img2img (ADetailer's): the init image is the main pass, unchanged."""
    from webui.engine.core.images import to_rgb

    def work(job: "Job") -> Generator[None, None, GenerationResult]:
        seed = request.seed if request.seed != -1 else random_seed()
        picture = to_rgb(request.init_image, "init_image")
        model = request.model or engine.selected_model or engine.settings.default_model
        params = {"Steps": request.steps, "CFG scale": request.cfg_scale, "Seed": seed,
                  "Size": f"{picture.width}x{picture.height}", "Model": model}
        result = GenerationResult(model_name=model or "", sampler_name=request.sampler_name or "")
        result.add(picture, build_infotext(request.prompt, request.negative_prompt, params), seed)
        if False:  # pragma: no cover - a generator with no turn of its own
            yield
        return result

    return work


def inner_work(engine: "Engine", kind: str, request: Any, mine: Callable) -> Callable:
    """The main pass's work: the first variant of `kind` after the detailer's that serves the
    request (hires fix, SD upscale), else the kind's own, with the request not saved."""
    inner_request = replace(request, save_images=False, addons={k: v for k, v in request.addons.items() if k != NAME})
    for variant in engine.job_kinds.variants.get(kind, []):
        if variant.work is not mine and variant.when(inner_request):
            return variant.work(engine, inner_request)
    return engine.job_kinds.kinds[kind].work(engine, inner_request)
