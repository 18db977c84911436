"""Measures the detailer on the embedded default models (issue 28, "Measured on the default models").

    OMP_NUM_THREADS=1 python -m tools.eval_detailer [--seeds 1] [--strength 0.5] [--unit-negative "circle, square, ring"]
        [--grid models/detailer_grid.jpg]

The default LDM (models/checkpoints/kiri-shapes-ldm) draws "a small <colour> star on the <left|right>,
white background" (4 colours x 2 places) at 64 px; the picture is upscaled 4x with Lanczos (256 px),
then the detailer runs alone (image to image with ADetailer's skip_img2img) with one unit that finds
"the star" by its word (the embedded kiri-segmenter) and redraws each region at the model's 64 px.

Read by kiri_world's detector (the picture read at 64x64): whether a star of the prompt's colour is
found, before (the Lanczos upscale) and after. Edge sharpness: mean Sobel gradient magnitude inside the
region masks at 256 px (its 90th percentile: the edges, not the flat inside). Change outside the masks: pixels that differ where every region's blurred
mask is 0 (the same segmentation, run again). Numbers and the before/after grid: models/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import kiri_world as W  # noqa: E402

COLOURS = ("red", "blue", "green", "yellow")
PLACES = ("left", "right")
WORD = "the star"


def build_engine():
    from webui.bootstrap import build_engine as build
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    settings = Settings(models_dir=ROOT / "models", outputs_dir=Path(tempfile.mkdtemp(prefix="kiri-eval-")),
                        save_images=False, default_model="kiri-shapes-ldm")
    return build(settings, DeviceChoice("cpu"))


def star_found(picture, colour: str) -> tuple[bool, bool]:
    """(a star is found, a star of `colour` is found) by kiri_world's detector, read at 64x64."""
    found, _ = W.detect(np.asarray(picture.convert("RGB")))
    stars = [d for d in found if d.shape == "star"]
    return bool(stars), any(d.colour == colour for d in stars)


def star_found_zoomed(picture, regions, colour: str, margin: float = 0.5) -> tuple[bool, bool]:
    """(a star is found, a star of `colour` is found) reading each region at its own scale: the region's
    box squared, grown by `margin` of its side on each side (clamped to the picture), cropped from the
    256 px picture and read by the detector at 64x64, as the detailer redraws it. The same crop of the
    Lanczos upscale is the "before"."""
    from PIL import Image

    rgb = np.asarray(picture.convert("RGB"))
    any_star = of_colour = False
    for region in regions:
        ys, xs = np.nonzero(region)
        if not len(xs):
            continue
        cx, cy = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
        side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        half = side * (0.5 + margin)
        x0, y0 = int(max(0, round(cx - half))), int(max(0, round(cy - half)))
        x1, y1 = int(min(rgb.shape[1], round(cx + half))), int(min(rgb.shape[0], round(cy + half)))
        crop = rgb[y0:y1, x0:x1]
        if crop.shape[0] != crop.shape[1]:  # at a border: pad with the picture's corner colour to a square
            size = max(crop.shape[:2])
            square = np.empty((size, size, 3), np.uint8)
            square[:] = rgb[0, 0] if x0 == 0 or y0 == 0 else rgb[-1, -1]
            square[: crop.shape[0], : crop.shape[1]] = crop
            crop = square
        star, of = star_found(Image.fromarray(np.ascontiguousarray(crop)), colour)
        any_star, of_colour = any_star or star, of_colour or of
    return any_star, of_colour


def colour_of_largest(picture) -> str | None:
    found, _ = W.detect(np.asarray(picture.convert("RGB")))
    return found[0].colour if found else None


def sharpness(picture, mask: np.ndarray) -> float:
    import cv2

    grey = np.asarray(picture.convert("L"), np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    magnitude = np.hypot(gx, gy)
    # the edges' strength: the 90th percentile inside the mask (its mean is mostly flat background)
    return float(np.percentile(magnitude[mask], 90)) if mask.any() else float("nan")


def region_masks(engine, picture, unit):
    """The unit's regions on `picture` (the detector run again) and their union blurred as the paste does."""
    from PIL import Image, ImageFilter

    from webui.engine import detailer
    from webui.engine.segment import SegmentRequest, segment

    result = segment(engine, SegmentRequest(picture, prompt=WORD, threshold=unit.ad_confidence))
    regions = detailer.unit_regions([np.asarray(m) > 0 for m in result.arrays()], unit)
    touched = np.zeros((picture.height, picture.width), bool)
    for region in regions:
        image = Image.fromarray(region.astype(np.uint8) * 255)
        if unit.ad_mask_blur:
            image = image.filter(ImageFilter.GaussianBlur(unit.ad_mask_blur))
        touched |= np.asarray(image) > 0
    union = np.zeros_like(touched)
    for region in regions:
        union |= region
    return regions, touched, union


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from webui.engine import detailer
    from webui.engine.generation.img2img import Img2ImgRequest
    from webui.engine.generation.requests import Txt2ImgRequest

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per prompt (1000, 1001, ...)")
    parser.add_argument("--strength", type=float, default=0.5, help="the unit's denoising strength")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unit-prompt", default="a large {colour} star, white background",
                        help="the unit's prompt ({colour} filled in); what the crop shows at 64 px")
    parser.add_argument("--unit-negative", default="",
                        help="the unit's negative prompt (ad_negative_prompt): what the redrawn region should not "
                             "be; the card's measurement names the shapes the blob reads as: \"circle, square, ring\"")
    parser.add_argument("--dilate", type=int, default=4, help="the unit's ad_dilate_erode, pixels at 256 px")
    parser.add_argument("--padding", type=int, default=32, help="the unit's only-masked padding, pixels at 256 px")
    parser.add_argument("--passes", type=int, default=1, help="units with these settings, one after the other")
    parser.add_argument("--inpaint-size", type=int, default=0, help="redraw each region at this size (0: the model's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other ADetailer field of the unit (ad_cfg_scale=5 with ad_use_cfg_scale=true, "
                             "ad_mask_blur=0, ...); the value read as JSON, else as text")
    parser.add_argument("--grid", type=Path, default=None, help="write the before/after grid here (JPEG)")
    args = parser.parse_args(argv)
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key.strip()] = json.loads(value)
        except ValueError:
            extra[key.strip()] = value

    engine = build_engine()
    engine.catalog.scan()
    rows = []
    grid_cells = []
    started = time.perf_counter()
    for colour in COLOURS:
        for place in PLACES:
            for seed in range(1000, 1000 + args.seeds):
                prompt = f"a small {colour} star on the {place}, white background"
                first = engine.txt2img(Txt2ImgRequest(prompt=prompt, steps=args.steps, width=64, height=64, seed=seed,
                                                      save_images=False, model="kiri-shapes-ldm")).images[0]
                before = first.resize((256, 256), Image.LANCZOS)
                unit_dict = {"ad_model": WORD, "ad_prompt": args.unit_prompt.format(colour=colour),
                             "ad_negative_prompt": args.unit_negative,
                             "ad_denoising_strength": args.strength, "ad_confidence": 0.5,
                             "ad_dilate_erode": args.dilate, "ad_inpaint_only_masked_padding": args.padding}
                unit_dict.update(extra)
                if args.inpaint_size:
                    unit_dict.update(ad_use_inpaint_width_height=True, ad_inpaint_width=args.inpaint_size,
                                     ad_inpaint_height=args.inpaint_size)
                unit = detailer.unit_from(unit_dict, "unit", [])
                request = Img2ImgRequest(prompt=prompt, steps=args.steps, width=64, height=64, seed=seed,
                                         init_image=before, save_images=False, model="kiri-shapes-ldm",
                                         addons={"adetailer": {"units": [unit_dict] * args.passes, "skip_img2img": True}})
                after = engine.img2img(request).images[0]
                regions, touched, union = region_masks(engine, before, unit)
                diff = np.abs(np.asarray(after, np.int16) - np.asarray(before, np.int16)).sum(axis=2) > 0
                row = dict(prompt=prompt, seed=seed, regions=len(regions),
                           star_before=star_found(before, colour), star_after=star_found(after, colour),
                           zoom_before=star_found_zoomed(before, regions, colour),
                           zoom_after=star_found_zoomed(after, regions, colour),
                           colour_before=colour_of_largest(before), colour_after=colour_of_largest(after),
                           sharp_before=sharpness(before, union), sharp_after=sharpness(after, union),
                           changed_outside=int((diff & ~touched).sum()), changed_inside=int((diff & touched).sum()))
                rows.append(row)
                grid_cells.append((before, after))
                print(row, flush=True)
    n = len(rows)
    found_before = sum(r["star_before"][1] for r in rows)
    found_after = sum(r["star_after"][1] for r in rows)
    any_before = sum(r["star_before"][0] for r in rows)
    any_after = sum(r["star_after"][0] for r in rows)
    zoom_before = sum(r["zoom_before"][1] for r in rows)
    zoom_after = sum(r["zoom_after"][1] for r in rows)
    kept = sum(r["colour_after"] == r["prompt"].split()[2] for r in rows)
    with_regions = [r for r in rows if r["regions"]]
    sharp_b = np.nanmean([r["sharp_before"] for r in with_regions]) if with_regions else float("nan")
    sharp_a = np.nanmean([r["sharp_after"] for r in with_regions]) if with_regions else float("nan")
    print(f"\n{n} pictures, {time.perf_counter() - started:.0f} s; regions found in {len(with_regions)} of {n}")
    print(f"star of the prompt's colour: before {found_before}/{n}, after {found_after}/{n} "
          f"(any star: {any_before}/{n} -> {any_after}/{n})")
    print(f"read in each region at its own scale: star of the prompt's colour before {zoom_before}/{n}, "
          f"after {zoom_after}/{n}")
    print(f"colour of the largest object right after: {kept}/{n}")
    print(f"edge sharpness in the masks (Sobel magnitude, 90th percentile): Lanczos {sharp_b:.1f} -> detailer {sharp_a:.1f}")
    print(f"pixels changed outside the masks: {sum(r['changed_outside'] for r in rows)} "
          f"(inside: {sum(r['changed_inside'] for r in rows)})")
    if args.grid is not None:
        cell = 256
        grid = Image.new("RGB", (cell * len(grid_cells), cell * 2), "white")
        for i, (b, a) in enumerate(grid_cells):
            grid.paste(b, (i * cell, 0))
            grid.paste(a, (i * cell, cell))
        grid.save(args.grid, quality=90)
        print(f"grid (top: Lanczos 4x, bottom: detailer): {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
