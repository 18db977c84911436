"""The Super-resolution job (the Extras tab, /sdapi/v1/extra-*-image): every picture of a request
upscaled as turns of one job and saved with AUTOMATIC1111's extras infotext."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generator

from webui.engine.core.limits import check_input

from ._listing import find_upscaler
from ._passes import check_addons, upscale_one
from ._requests import UpscaleRequest, UpscaleResult, check_model_passes

if TYPE_CHECKING:
    from PIL import Image

    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job

def prepare_upscale(engine: "Engine", request: UpscaleRequest) -> list[tuple[int, int]]:
    """Everything checked before any pixel work, on the images' headers (core/limits.py): the
    upscalers, each picture against Settings.max_pixels, each output and every model pass's own
    output against Settings.max_output_pixels."""
    request.validate()
    one = find_upscaler(request.upscaler_1, "upscaler_1", engine.catalog)
    two = find_upscaler(request.upscaler_2, "upscaler_2", engine.catalog)
    blends = two.name != "None" and request.upscaler_2_visibility > 0
    if request.addons:  # unknown add-ons and bad settings, and upscalers that do not denoise, refused before queueing
        engine.addons.build(request.addons)
        check_addons(one, request.addons, "upscaler_1")
        if blends:
            check_addons(two, request.addons, "upscaler_2")
    limit = engine.settings.max_output_pixels
    field = "imageList" if len(request.images) > 1 or request.names else "image"
    sizes = []
    for image in request.images:
        check_input(field, image.width, image.height, limit=engine.settings.max_pixels)
        size = request.size_for(image, limit)
        check_model_passes(one, image.width, image.height, size, "upscaler_1", limit)
        if blends:
            check_model_passes(two, image.width, image.height, size, "upscaler_2", limit)
        sizes.append(size)
    return sizes


def upscale_images(engine: "Engine", request: UpscaleRequest, job: "Job | None" = None) -> UpscaleResult:
    """Upscale every image of the request as a job of the fair queue (one tile a turn); saves each
    with its infotext unless the request or Settings say not to."""
    from webui.engine.core.jobs import Job

    job = job or Job(kind="extras")
    return engine.run_kind("extras", request, job)  # through the engine's dispatcher (Ray Serve replicas)


def extras_work(engine: "Engine", request: UpscaleRequest):
    """The "extras" job kind's work: everything checked in the caller's thread, then a tile a turn."""
    sizes = prepare_upscale(engine, request)
    return lambda job: upscale_work(engine, request, sizes, job)


def upscale_work(engine: "Engine", request: UpscaleRequest, sizes: list[tuple[int, int]], job: "Job") -> Generator[None, None, UpscaleResult]:
    from webui.engine.core.images import to_rgba
    from webui.engine.core.outputs import dated_dir, save_image

    result = UpscaleResult()
    job.image_count, job.batch_count = len(request.images), len(request.images)
    save = engine.settings.save_images if request.save_images is None else request.save_images
    out_dir = dated_dir(engine.outputs_for(job.owner), "extras")
    for number, (image, size) in enumerate(zip(request.images, sizes), 1):
        if job.interrupted:
            result.interrupted = True
            break
        job.start_batch(number, 1)
        source_info = _infotext_of(image)
        picture = to_rgba(image, "image") if _has_alpha(image) else image
        out, note = yield from upscale_one(engine, picture, size, request, job)
        result.tiles += note["tiles"]
        result.warnings.extend(w for w in note["warnings"] if w not in result.warnings)
        info = _extras_infotext(source_info, request, note)
        if save:
            result.paths.append(save_image(out, out_dir, info, 0, request.image_format or engine.settings.image_format))
        result.images.append(out)
        result.infotexts.append(info)
        result.names.append(request.names[number - 1] if number <= len(request.names) else f"{number:05d}.png")
        job.finish_images(1)
        if note["interrupted"]:
            result.interrupted = True
            break
        if number < len(request.images):
            yield
    return result



def _has_alpha(image: "Image.Image") -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _infotext_of(image: "Image.Image") -> str:
    from webui.engine.core.infotext import read_infotext

    try:
        return read_infotext(image) or ""
    except Exception:  # noqa: BLE001 - a picture without readable metadata has none
        return ""


def _extras_infotext(source: str, request: UpscaleRequest, note: dict) -> str:
    """AUTOMATIC1111's extras parameters, appended to the picture's own infotext when it has one."""
    if request.width is not None or request.height is not None:
        pairs = [f"Postprocess upscale to: {request.width or 0}x{request.height or 0}"]
        if request.crop:
            pairs.append("Postprocess crop to: True")
    else:
        pairs = [f"Postprocess upscale by: {request.scale:g}"]
    pairs.append(f"Postprocess upscaler: {request.upscaler_1}")
    if request.upscaler_2 not in (None, "", "None") and request.upscaler_2_visibility > 0:
        pairs += [f"Postprocess upscaler 2: {request.upscaler_2}", f"Postprocess upscaler 2 visibility: {request.upscaler_2_visibility:g}"]
    if note.get("tiles"):
        pairs += [f"Tile size: {note['tile']}", f"Tile overlap: {request.tile_overlap}", f"Tiles: {note['tiles']}"]
    pairs += [f"{key}: {value}" for key, value in note.get("addons", {}).items()]
    line = ", ".join(pairs)
    if not source:
        return line
    return f"{source}, {line}" if "\n" in source else f"{source}\n{line}"
