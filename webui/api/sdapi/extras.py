"""POST /sdapi/v1/extra-single-image, /extra-batch-images and /png-info.

Upscaling runs as a job in the same queue as generation, with its progress and Interrupt.
"""

from __future__ import annotations

import base64
import io

from fastapi import APIRouter, Request

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.infotext import parse_infotext, read_infotext
from webui.engine.core.jobs import Job
from webui.engine.styles import extract_styles, load_styles
from webui.engine.upscale import UpscaleRequest, upscale_images

from ..common import ApiContext, decode_image
from .fields import ExtraBatchBody, ExtraSingleBody, PngInfoBody


def upscale_request(body: ExtraSingleBody, images: list, names: list[str] | None = None) -> UpscaleRequest:
    """A1111's extras fields -> the engine's UpscaleRequest (resize_mode 1: to width x height)."""
    by_size = body.resize_mode == 1
    return UpscaleRequest(
        images=images, upscaler_1=body.upscaler_1 or "None", upscaler_2=body.upscaler_2 or "None",
        upscaler_2_visibility=body.extras_upscaler_2_visibility, scale=body.upscaling_resize,
        width=body.upscaling_resize_w if by_size else None, height=body.upscaling_resize_h if by_size else None,
        crop=body.upscaling_crop, tile_size=body.tile_size, tile_overlap=body.tile_overlap, names=names or [],
        save_images=False,
    )


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    def extras(images: list, body: ExtraSingleBody, owner: str, names: list[str] | None = None):
        """Checked on the images' headers (decode_image(load=False)) before any pixel is decoded;
        the work is a job in the fair queue (one tile a turn), with progress and Interrupt."""
        return upscale_images(engine, upscale_request(body, images, names), Job(kind="extras", owner=owner))

    @router.post("/extra-single-image")
    def extra_single_image(body: ExtraSingleBody, http: Request) -> dict:
        result = extras([decode_image(body.image, max_pixels=ctx.max_pixels, load=False)], body, ctx.owner(http))
        return {"image": _png(result.images[0], result.infotexts[0]) if result.images else "",
                "html_info": result.infotexts[0] if result.infotexts else ""}

    @router.post("/extra-batch-images")
    def extra_batch_images(body: ExtraBatchBody, http: Request) -> dict:
        if not body.imageList:
            raise InvalidRequest("imageList", "imageList is empty")
        images = [decode_image(item.data, "imageList", max_pixels=ctx.max_pixels, load=False) for item in body.imageList]
        result = extras(images, body, ctx.owner(http), [item.name for item in body.imageList])
        return {"images": [_png(image, text) for image, text in zip(result.images, result.infotexts)],
                "html_info": result.infotexts[0] if result.infotexts else ""}

    @router.post("/png-info")
    def png_info(body: PngInfoBody) -> dict:
        # Metadata only: the image stays lazily opened and its pixels are never decoded.
        image = decode_image(body.image, max_pixels=ctx.max_pixels, load=False)
        text = read_infotext(image) or ""
        parsed = parse_infotext(text) if text else None
        items = {"parameters": text} if text else {}
        parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params} if parsed else {}
        if parsed:  # as A1111 reads it ("Apply if any"): the saved styles the prompts hold, taken out of them
            found, prompt, negative = extract_styles(load_styles(ctx.engine.settings), parsed.prompt, parsed.negative_prompt)
            if found:
                parameters.update({"Prompt": prompt, "Negative prompt": negative, "Styles array": found})
        return {"info": text, "items": items, "parameters": parameters}


def _png(image, infotext: str) -> str:
    from webui.engine.core.infotext import pnginfo_for

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(infotext))
    return base64.b64encode(buffer.getvalue()).decode()
