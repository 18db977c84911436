"""POST /sdapi/v1/extra-single-image, /extra-batch-images and /png-info.

Upscaling runs as a job in the same queue as generation, with its progress and Interrupt.
"""

from __future__ import annotations

import base64
import io

from fastapi import APIRouter, Request

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.images import to_rgb
from webui.engine.core.infotext import parse_infotext, read_infotext
from webui.engine.core.jobs import Job
from webui.engine.upscale import find_upscaler, target_size, upscale

from ..common import ApiContext, decode_image
from .fields import ExtraBatchBody, ExtraSingleBody, PngInfoBody


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    def extras(images: list, body: ExtraSingleBody, owner: str, field: str) -> list[tuple[str, str]]:
        """Everything is checked on the images' headers (decode_image(load=False)) before any pixel is decoded."""
        find_upscaler(body.upscaler_1, "upscaler_1")
        find_upscaler(body.upscaler_2, "upscaler_2")
        sizes = []
        for image in images:
            if body.resize_mode == 1:
                sizes.append(target_size(image.width, image.height, to_width=body.upscaling_resize_w,
                                         to_height=body.upscaling_resize_h))
            else:
                sizes.append(target_size(image.width, image.height, scale=body.upscaling_resize))
        images = [to_rgb(image, field) for image in images]

        def work(job: Job):
            job.image_count, job.batch_count = len(images), 1
            job.start_batch(1, len(images))
            done = []
            for number, (image, size) in enumerate(zip(images, sizes), 1):
                if job.interrupted:
                    break
                result = upscale(image, size, body.upscaler_1, body.upscaler_2, body.extras_upscaler_2_visibility,
                                 body.upscaling_crop)
                buffer = io.BytesIO()
                result.save(buffer, format="PNG")
                done.append((base64.b64encode(buffer.getvalue()).decode(),
                             f"<p>Upscaler: {body.upscaler_1}, {result.width}x{result.height}</p>"))
                job.advance(number)
                job.finish_images(1)
                if number < len(images):
                    yield
            return done

        return engine.run(owner, "extras", work)

    @router.post("/extra-single-image")
    def extra_single_image(body: ExtraSingleBody, http: Request) -> dict:
        (encoded, html), = extras([decode_image(body.image, load=False)], body, ctx.owner(http), "image")
        return {"image": encoded, "html_info": html}

    @router.post("/extra-batch-images")
    def extra_batch_images(body: ExtraBatchBody, http: Request) -> dict:
        if not body.imageList:
            raise InvalidRequest("imageList", "imageList is empty")
        results = extras([decode_image(item.data, "imageList", load=False) for item in body.imageList], body,
                         ctx.owner(http), "imageList")
        return {"images": [encoded for encoded, _ in results], "html_info": results[0][1] if results else ""}

    @router.post("/png-info")
    def png_info(body: PngInfoBody) -> dict:
        # Metadata only: the image stays lazily opened and its pixels are never decoded.
        image = decode_image(body.image, load=False)
        text = read_infotext(image) or ""
        parsed = parse_infotext(text) if text else None
        items = {"parameters": text} if text else {}
        parameters = {"Prompt": parsed.prompt, "Negative prompt": parsed.negative_prompt, **parsed.params} if parsed else {}
        return {"info": text, "items": items, "parameters": parameters}
