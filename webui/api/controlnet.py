"""sd-webui-controlnet's routes, which its clients (webuiapi's ControlNetUnit users, bots) call:

    GET  /controlnet/model_list     {"model_list": ["name [hash8]", ...]}   (?update=true rescans models/)
    GET  /controlnet/module_list    {"module_list": [...], "module_detail": {...}}   (?alias_names= accepted)
    POST /controlnet/detect         {controlnet_module, controlnet_input_images: [b64], controlnet_processor_res,
                                     controlnet_threshold_a, controlnet_threshold_b, controlnet_masks?}
                                    -> {"images": [b64 PNG], "info": "Success"}
    GET  /controlnet/version        {"version": 2}
    GET  /controlnet/settings       {"control_net_unit_count": n}

The units themselves come in /sdapi/v1/txt2img and /img2img's `alwayson_scripts.controlnet.args` (the
add-on reads them). The model list holds the IP-Adapter models too when that kind is registered, as
sd-webui-controlnet lists them side by side.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from webui.engine import controlnet
from webui.engine.core.errors import InvalidRequest

from .common import ApiContext, KiriRoute, decode_image, encode_png

VERSION = 2
IP_ADAPTER_KIND = "ipadapter"
MAX_DETECT_IMAGES = 16


class DetectBody(BaseModel):
    """sd-webui-controlnet's /controlnet/detect body; fields Kiri does not use are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_masks: list[str] | None = None
    controlnet_processor_res: int = 512
    controlnet_threshold_a: float | None = None
    controlnet_threshold_b: float | None = None


def model_titles(engine: Any) -> list[str]:
    catalog = engine.catalog
    titles = [item["title"] for item in controlnet.list_models(catalog)]
    if IP_ADAPTER_KIND in getattr(catalog, "kinds", {}):
        titles += [controlnet.title(catalog, entry) for entry in catalog.of_kind(IP_ADAPTER_KIND)]
    return titles


def build_router(ctx: ApiContext) -> APIRouter:
    engine = ctx.engine
    router = APIRouter(tags=["controlnet"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    @router.get("/controlnet/version")
    def version() -> dict:
        return {"version": VERSION}

    @router.get("/controlnet/settings")
    def settings() -> dict:
        return {"control_net_unit_count": controlnet.unit_count(engine.settings)}

    @router.get("/controlnet/model_list")
    def model_list(update: bool = True) -> dict:
        if update or not engine.catalog.of_kind(controlnet.NAME):
            engine.catalog.scan()
        return {"model_list": model_titles(engine)}

    @router.get("/controlnet/module_list")
    def module_list(alias_names: bool = False) -> dict:
        return {"module_list": controlnet.module_names(), "module_detail": controlnet.module_detail()}

    @router.post("/controlnet/detect")
    def detect(body: DetectBody) -> dict:
        if not body.controlnet_input_images:
            raise InvalidRequest("controlnet_input_images", "send at least one image (base64) in controlnet_input_images")
        if len(body.controlnet_input_images) > MAX_DETECT_IMAGES:
            raise InvalidRequest("controlnet_input_images", f"at most {MAX_DETECT_IMAGES} images at a time")
        masks = body.controlnet_masks or []
        if masks and len(masks) != len(body.controlnet_input_images):
            raise InvalidRequest("controlnet_masks", "send one mask per image in controlnet_masks, or none")
        if not 64 <= body.controlnet_processor_res <= 4096:
            raise InvalidRequest("controlnet_processor_res", "controlnet_processor_res must be from 64 to 4096")
        from PIL import Image

        images = []
        for i, data in enumerate(body.controlnet_input_images):
            image = decode_image(data, f"controlnet_input_images[{i}]", max_pixels=ctx.max_pixels)
            mask = decode_image(masks[i], f"controlnet_masks[{i}]", max_pixels=ctx.max_pixels) if masks else None
            try:
                array = controlnet.preview(body.controlnet_module, image, body.controlnet_processor_res,
                                           body.controlnet_threshold_a, body.controlnet_threshold_b, mask=mask,
                                           catalog=engine.catalog)
            except InvalidRequest as exc:
                field = "controlnet_module" if exc.field == "module" else exc.field
                raise InvalidRequest(field, str(exc)) from None
            images.append(encode_png(Image.fromarray(array)))
        return {"images": images, "info": "Success"}

    return router
