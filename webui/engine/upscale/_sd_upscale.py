"""SD upscale (AUTOMATIC1111's script, ComfyUI's Ultimate SD Upscale) as stages of one job:

1. the init image upscaled by `scale` with any upscaler of the registry (a model's tiles are turns),
2. image to image over overlapping tiles of the request's width x height, each tile a stage with
   the request's checkpoint, prompt, sampler and (low) denoising strength; the outputs blended
   with feathered weights over the overlap,
3. the seam fix, when asked: the borders between tiles denoised again at `seam_fix_denoise`, in
   regions laid across them ("Half tile offset": a tile-wide region centred on each border, its
   mask 1 on the border falling to 0 half a tile away, where the tiles of step 2 have no border;
   "Bands": a band `seam_fix_width` wide, fading out over `seam_fix_padding`), vertical borders
   first, then horizontal ones,
4. the picture saved whole, with the first tile's infotext (Size = the tile size, as A1111 writes)
   and the SD upscale keys.

Interrupt keeps the tiles finished so far over the upscaled picture.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Generator

from webui.engine.core.errors import InvalidRequest
from webui.engine.generation.img2img import Img2ImgRequest, Img2ImgTask, check_pixels, prepare
from webui.engine.generation.jobs import stage
from webui.engine.generation.requests import MAX_SIZE, MIN_SIZE, GenerationResult, random_seed

from . import UpscaleRequest, check_model_passes, find_upscaler, target_size, upscale_one
from ._tiles import spans

if TYPE_CHECKING:
    import numpy as np

    from webui.engine.context import Engine
    from webui.engine.core.jobs import Job
    from webui.engine.models.manager import LoadedModel


def check(engine: "Engine", request: Img2ImgRequest) -> tuple[int, int]:
    """Refused before the job is queued: the upscaler, the picture's size, the output's size."""
    options = request.sd_upscale
    upscaler = find_upscaler(options.upscaler, "sd_upscale.upscaler", engine.catalog)
    check_pixels(request.init_image, engine.settings.max_pixels)
    limit = engine.settings.max_output_pixels
    width, height = request.init_image.width, request.init_image.height
    try:
        size = target_size(width, height, scale=options.scale, max_pixels=limit)
    except InvalidRequest as exc:
        raise InvalidRequest("sd_upscale.scale", str(exc).replace("upscaling_resize", "sd_upscale.scale")) from exc
    check_model_passes(upscaler, width, height, size, "sd_upscale.upscaler", limit)
    return size


@dataclass
class Region:
    """A box of the picture denoised as one tile, with its blend weight (against regions of the
    same pass) and its mask (how much of it replaces the picture), both (h, w) arrays."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    weight: "np.ndarray"
    alpha: "np.ndarray"


@dataclass
class SDUpscaleTileTask(Img2ImgTask):
    """One tile: image to image, with the SD upscale keys in its infotext."""

    extra: dict[str, object] | None = None
    tile: tuple[int, int] = (0, 0)  # the request's tile size (a region may be denoised at another size)
    picture_seed: int = 0

    def infotext_params(self, model: "LoadedModel", sampler: str, schedule: str, seed: int) -> dict[str, object]:
        params = super().infotext_params(model, sampler, schedule, seed)
        params["Size"], params["Seed"] = f"{self.tile[0]}x{self.tile[1]}", self.picture_seed
        version = params.pop("Version", None)
        return {**params, **(self.extra or {}), "Version": version}


@dataclass
class SDUpscaleTileRequest(Img2ImgRequest):
    """One tile as a request of its own (job kind "sd_upscale_tile", the part a dispatcher sends to a
    replica): image to image of the crop, with the SD upscale keys its infotext carries."""

    tile_extra: dict[str, Any] | None = None  # the SD upscale keys of the picture's infotext
    tile: list[int] | None = None  # the SD upscale request's tile size (Size in the infotext)
    picture_seed: int = 0  # the picture's seed (Seed in the infotext; a tile may denoise with its own)


def tile_work(engine: "Engine", request: SDUpscaleTileRequest):
    """The "sd_upscale_tile" kind's work: the crop checked and prepared here, then its denoising."""
    warnings: list[str] = []
    check_pixels(request.init_image, engine.settings.max_pixels)
    tile = tuple(request.tile) if request.tile else (request.width, request.height)
    task = SDUpscaleTileTask(request, prepare(request, warnings), extra=request.tile_extra, tile=tile,
                             picture_seed=request.picture_seed)

    def work(job: "Job") -> Generator[None, None, GenerationResult]:
        out = yield from stage(engine, task, job)
        out.warnings[:0] = warnings
        return out

    return work


def sd_upscale(engine: "Engine", request: Img2ImgRequest, job: "Job") -> Generator[None, None, GenerationResult]:
    import numpy as np
    from PIL import Image

    from webui.engine.core.images import to_rgb
    from webui.engine.core.outputs import dated_dir, save_image

    options = request.sd_upscale
    size = check(engine, request)
    upscaler = find_upscaler(options.upscaler, "sd_upscale.upscaler", engine.catalog)
    result = GenerationResult()
    source = to_rgb(request.init_image, "init_image")

    # 1. Upscale.
    job.label = f"Upscale ({upscaler.name})"
    big, note = yield from upscale_one(engine, source, size, UpscaleRequest([source], upscaler.name, crop=False), job)
    result.warnings.extend(note["warnings"])
    if note["interrupted"] or job.interrupted:
        result.interrupted = True
        return result

    tile = (request.width, request.height)
    grid = grid_regions(size, tile, options.overlap)
    seams = seam_passes(size, tile, options) if options.seam_fix != "None" else []
    extra = {"SD upscale overlap": options.overlap, "SD upscale upscaler": upscaler.name,
             "SD upscale scale": options.scale if options.scale != 2 else None,
             "SD upscale seam fix": options.seam_fix if options.seam_fix != "None" else None,
             "SD upscale seam fix denoise": options.seam_fix_denoise if options.seam_fix != "None" else None,
             "SD upscale seed per tile": True if options.seed_per_tile else None}
    save = engine.settings.save_images if request.save_images is None else request.save_images
    out_dir = dated_dir(engine.outputs_for(job.owner), "img2img")
    base_seed = request.seed if request.seed != -1 else random_seed()
    model = request.model
    total = len(grid) + sum(len(p) for p in seams)
    for number in range(request.total_images):
        seed = (base_seed + number) % 2**32
        canvas = np.asarray(big, dtype=np.float32).copy()
        stage = _Stage(engine, request, model, seed, extra, job, total, number, request.total_images)
        # 2. Every tile at the request's denoising strength.
        canvas = yield from stage.denoise(canvas, grid, request.denoising_strength)
        # 3. The seam fix, vertical borders then horizontal ones.
        for regions in seams:
            if stage.interrupted:
                break
            canvas = yield from stage.denoise(canvas, regions, options.seam_fix_denoise)
        model = stage.model
        result.model_name, result.model_hash = stage.first.model_name, stage.first.model_hash
        result.sampler_name, result.schedule = stage.first.sampler_name, stage.first.schedule
        result.warnings.extend(w for w in stage.warnings if w not in result.warnings)
        # 4. The picture, saved whole with the first tile's infotext.
        image = Image.fromarray(np.clip(canvas.round(), 0, 255).astype(np.uint8))
        info = stage.infotext
        if stage.interrupted:
            result.interrupted = True
            result.warnings.append(f"Interrupted after {stage.done} of {total} tiles: the rest is the "
                                   f"{upscaler.name} upscale.")
        if info is None:  # interrupted before any tile finished
            break
        path = save_image(image, out_dir, info, seed, request.image_format or engine.settings.image_format) if save else None
        result.add(image, info, seed, path)
        if stage.interrupted:
            break
    job.label = ""
    return result


class _Stage:
    """The tiles of one output picture: each region an img2img stage of the job."""

    def __init__(self, engine, request: Img2ImgRequest, model: str | None, seed: int, extra: dict, job, total: int,
                 picture: int, pictures: int):
        self.engine, self.request, self.model, self.seed, self.extra, self.job = engine, request, model, seed, extra, job
        self.total, self.picture, self.pictures = total, picture, pictures
        self.done = 0
        self.interrupted = False
        self.infotext: str | None = None
        self.first = GenerationResult()
        self.warnings: list[str] = []

    def denoise(self, canvas: "np.ndarray", regions: list[Region], strength: float) -> Generator[None, None, "np.ndarray"]:
        import numpy as np
        from PIL import Image

        height, width = canvas.shape[:2]
        numerator = np.zeros_like(canvas)
        denominator = np.zeros((height, width, 1), dtype=np.float32)
        cover = np.zeros((height, width, 1), dtype=np.float32)
        for region in regions:
            if self.job.interrupted:
                self.interrupted = True
                break
            x0, y0, x1, y1 = region.box
            crop = Image.fromarray(np.clip(canvas[y0:y1, x0:x1].round(), 0, 255).astype(np.uint8))
            self.job.label = (f"Picture {self.picture + 1}/{self.pictures}, " if self.pictures > 1 else "") + \
                f"tile {self.done + 1}/{self.total}"
            out = yield from self._tile(crop, strength)
            if out is None:
                if self.interrupted:
                    break
                continue  # skipped: the region keeps the picture as it was
            weight = (region.weight * region.alpha)[:, :, None]
            numerator[y0:y1, x0:x1] += np.asarray(out, dtype=np.float32) * weight
            denominator[y0:y1, x0:x1] += weight
            cover[y0:y1, x0:x1] = np.maximum(cover[y0:y1, x0:x1], region.alpha[:, :, None])
            self.done += 1
        blended = numerator / np.maximum(denominator, 1e-8)
        cover = np.where(denominator > 0, cover, 0)
        return canvas * (1 - cover) + blended * cover

    def _tile(self, crop, strength: float) -> Generator[None, None, Any]:
        """One region through image to image at a size the model takes (multiples of 8, at least
        MIN_SIZE), resized back to the region."""
        from PIL import Image

        r = self.request
        size = tuple(min(MAX_SIZE, max(MIN_SIZE, -(-side // 8) * 8)) for side in crop.size)
        seed = (self.seed + self.done) % 2**32 if r.sd_upscale.seed_per_tile else self.seed
        tile_request = replace(r, init_image=crop, width=size[0], height=size[1], denoising_strength=strength, seed=seed,
                               batch_size=1, n_iter=1, model=self.model, save_images=False, sd_upscale=None, mask=None,
                               resize_mode=0)
        # The picture's infotext is the first tile's: Size is the tile size, as A1111 writes it.
        part = SDUpscaleTileRequest(**{f.name: getattr(tile_request, f.name) for f in fields(tile_request) if f.init},
                                    tile_extra=self.extra, tile=[r.width, r.height], picture_seed=self.seed)
        # a part of the job: here, or a turn of its own on a free replica (engine.part_work)
        out = yield from self.engine.part_work("sd_upscale_tile", part)(self.job)
        self.warnings.extend(w for w in out.warnings if w not in self.warnings)
        if out.interrupted:
            self.interrupted = True
        if not out.images:
            return None
        if self.infotext is None:
            self.infotext, self.first, self.model = out.infotexts[0], out, out.model_name
        image = out.images[0].convert("RGB")
        return image.resize(crop.size, Image.LANCZOS) if image.size != crop.size else image


# --- where the tiles go ----------------------------------------------------------------------

def feather(length: int, lead: bool, trail: bool, width: int) -> "np.ndarray":
    """1-D blend weights: rising linearly over `width` pixels at the ends that meet a neighbour
    (never quite zero, so a pixel covered by one region alone keeps it)."""
    import numpy as np

    weights = np.ones(length, dtype=np.float32)
    if width <= 0:
        return weights
    rise = np.minimum(1.0, (np.arange(length, dtype=np.float32) + 1) / (width + 1))
    if lead:
        weights = np.minimum(weights, rise)
    if trail:
        weights = np.minimum(weights, rise[::-1])
    return weights


def grid_regions(size: tuple[int, int], tile: tuple[int, int], overlap: int) -> list[Region]:
    """Tiles of `tile` covering the picture, neighbours sharing `overlap` pixels, feathered across it."""
    import numpy as np

    width, height = size
    rows, cols = spans(height, tile[1], overlap), spans(width, tile[0], overlap)
    regions = []
    for r, (y0, y1) in enumerate(rows):
        wy = feather(y1 - y0, r > 0, r < len(rows) - 1, overlap)
        for c, (x0, x1) in enumerate(cols):
            wx = feather(x1 - x0, c > 0, c < len(cols) - 1, overlap)
            weight = wy[:, None] * wx[None, :]
            regions.append(Region((x0, y0, x1, y1), weight, np.ones_like(weight)))
    return regions


def borders(length: int, tile: int, overlap: int) -> list[float]:
    """Where the tiles of one axis meet: the middle of each overlap."""
    cuts = spans(length, tile, overlap)
    return [(start + end) / 2 for (_, end), (start, _) in zip(cuts, cuts[1:])]


def _across(length: int, centre: float, half: int) -> tuple[int, int]:
    """[start, end) of 2 * half pixels centred on `centre`, slid inside 0..length."""
    size = min(length, 2 * half)
    start = min(max(0, round(centre - half)), length - size)
    return start, start + size


def along_centres(length: int, tile: int) -> list[float]:
    """Centres of tile-long regions along a border, half a tile apart, the first and last at the ends."""
    import math

    if length <= tile:
        return [length / 2]
    count = math.ceil((length - tile) / (tile / 2)) + 1
    step = (length - tile) / (count - 1)
    return [tile / 2 + k * step for k in range(count)]


def tent(positions: "np.ndarray", centre: float, half: float) -> "np.ndarray":
    """1 at the centre falling linearly to 0 half a tile away (never quite 0): neighbours half a tile
    apart cross-fade over half a tile, so the seam fix adds no short seams of its own."""
    import numpy as np

    return np.clip(1 - np.abs(positions - centre) / half, 1e-3, 1)


def seam_passes(size: tuple[int, int], tile: tuple[int, int], options) -> list[list[Region]]:
    """The seam fix's regions: one pass across the vertical borders, one across the horizontal ones.

    Across a border a region's mask is 1 on the border and falls to 0 (half a tile away for "Half
    tile offset", past the band and its padding for "Bands"); along the border, regions a tile long
    are laid half a tile apart and cross-faded with tent weights."""
    import numpy as np

    width, height = size
    if options.seam_fix == "Half tile offset":
        halves = (tile[0] / 2, tile[1] / 2)

        def mask(distance: "np.ndarray", half: float) -> "np.ndarray":
            return np.clip(1 - np.abs(distance) / half, 0, 1)
    else:
        band, pad = options.seam_fix_width / 2, options.seam_fix_padding
        halves = (band + pad, band + pad)

        def mask(distance: "np.ndarray", half: float) -> "np.ndarray":
            return np.clip((band + pad - np.abs(distance)) / max(pad, 1), 0, 1)

    passes = []
    for axis in (0, 1):  # 0: borders between columns (vertical lines), 1: between rows
        length, other = (width, height) if axis == 0 else (height, width)
        along_tile = min(other, tile[1 - axis])
        regions = []
        for centre in borders(length, tile[axis], options.overlap):
            # A band narrower than the model's smallest size is denoised with context around it (not stretched).
            start, end = _across(length, centre, max(int(np.ceil(halves[axis])), MIN_SIZE // 2))
            across = mask(np.arange(start, end, dtype=np.float32) + 0.5 - centre, halves[axis])
            for middle in along_centres(other, along_tile):
                a0, a1 = _across(other, middle, along_tile // 2)
                fade = tent(np.arange(a0, a1, dtype=np.float32) + 0.5, middle, along_tile / 2)
                if axis == 0:
                    box = (start, a0, end, a1)
                    alpha = np.broadcast_to(across[None, :], (a1 - a0, end - start))
                    weight = np.broadcast_to(fade[:, None], (a1 - a0, end - start))
                else:
                    box = (a0, start, a1, end)
                    alpha = np.broadcast_to(across[:, None], (end - start, a1 - a0))
                    weight = np.broadcast_to(fade[None, :], (end - start, a1 - a0))
                regions.append(Region(box, weight, alpha))
        if regions:
            passes.append(regions)
    return passes
