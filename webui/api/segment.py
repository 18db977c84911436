"""Segmentation routes: Kiri's /kiri/v1/segment, /kiri/v1/segmenters and /kiri/v1/masks, and the
/sam/* routes of AUTOMATIC1111's sd-webui-segment-anything extension, whose clients exist.

All map onto the engine's SegmentRequest and call `segment()`, so they share the UI's fair queue,
the API's auth and body cap. Masks go out as base64 PNG, mode L, the image's size, 255 inside.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from webui.engine.core.errors import InvalidRequest
from webui.engine.core.images import to_rgb
from webui.engine.segment import SegmentRequest, mask_tools, segment, segmenters

from .common import ApiContext, KiriRoute, decode_image, encode_png

SAM_CANDIDATES = 3  # the extension always answers three masks; clients index them


class SegmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str
    prompt: str | None = None
    points: list[Any] | None = None
    box: list[Any] | None = None
    model: str | None = None
    threshold: float = 0.5


class MaskTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    radius: float = 0


class MasksBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    masks: list[str] = Field(min_length=1)
    operation: str = "union"
    tools: list[MaskTool] = Field(default_factory=list)
    image: str | None = None  # when given, every mask must have its size, and a preview comes back


class SamPredictBody(BaseModel):
    """sd-webui-segment-anything's SamPredictRequest; fields Kiri does not use are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    sam_model_name: str | None = None
    input_image: str
    sam_positive_points: list[Any] = Field(default_factory=list)
    sam_negative_points: list[Any] = Field(default_factory=list)
    dino_enabled: bool = False
    dino_model_name: str | None = None
    dino_text_prompt: str | None = None
    dino_box_threshold: float = 0.3
    dino_preview_checkbox: bool = False
    dino_preview_boxes_selection: list[int] | None = None


class DilateMaskBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_image: str
    mask: str
    dilate_amount: int = 10


def _image(data: str, field: str, max_pixels: int):
    return to_rgb(decode_image(data, field, max_pixels=max_pixels), field)


def build_router(ctx: ApiContext) -> APIRouter:
    engine = ctx.engine
    router = APIRouter(tags=["segment"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    @router.post("/kiri/v1/segment")
    def kiri_segment(body: SegmentBody, http: Request) -> dict:
        request = SegmentRequest(_image(body.image, "image", ctx.max_pixels), body.prompt, body.points, body.box, body.model, body.threshold)
        result = segment(engine, request, ctx.owner(http))
        return {"masks": [encode_png(m) for m in result.masks], "labels": result.labels, "scores": result.scores,
                "info": result.info}

    @router.get("/kiri/v1/segmenters")
    def kiri_segmenters() -> list[dict]:
        return [s.plain() for s in segmenters(engine)]

    @router.post("/kiri/v1/masks")
    def kiri_masks(body: MasksBody) -> dict:
        """Combine masks (union, intersect, subtract: the first minus the rest), then apply tools in order."""
        image = _image(body.image, "image", ctx.max_pixels) if body.image is not None else None
        size = image.size if image is not None else None
        arrays = []
        for index, data in enumerate(body.masks):
            mask = decode_image(data, f"masks[{index}]", max_pixels=ctx.max_pixels)
            arrays.append(mask_tools.to_array(mask, f"masks[{index}]", size or mask.size, ctx.max_pixels))
            size = size or mask.size
        combined = mask_tools.combine(arrays, body.operation)
        for index, tool in enumerate(body.tools):
            if combined.dtype != bool:
                raise InvalidRequest(f"tools[{index}]", "feather must be the last tool: it makes a soft mask")
            combined = mask_tools.apply_tool(combined, tool.tool, tool.radius, f"tools[{index}]")
        answer: dict[str, Any] = {"mask": encode_png(mask_tools.to_image(combined))}
        if image is not None:
            answer["preview"] = encode_png(mask_tools.overlay(image, [combined]))
        return answer

    # --- sd-webui-segment-anything ------------------------------------------------------------
    @router.get("/sam/heartbeat")
    def sam_heartbeat() -> dict:
        return {"msg": "Success!"}

    @router.get("/sam/sam-model")
    def sam_models() -> list[str]:
        return [s.name for s in segmenters(engine) if s.problem is None and "points" in s.prompts]

    @router.post("/sam/sam-predict")
    def sam_predict(body: SamPredictBody, http: Request) -> dict:
        image = _image(body.input_image, "input_image", ctx.max_pixels)
        names = {s.name for s in segmenters(engine)}
        note = ""
        if body.dino_enabled:
            if not (body.dino_text_prompt or "").strip():
                raise InvalidRequest("dino_text_prompt", "dino_enabled is true but dino_text_prompt is empty")
            model = body.dino_model_name if body.dino_model_name in names else None
            request = SegmentRequest(image, prompt=body.dino_text_prompt, model=model, threshold=body.dino_box_threshold)
        else:
            points = [_sam_point(p, 1, "sam_positive_points", i) for i, p in enumerate(body.sam_positive_points)]
            points += [_sam_point(p, 0, "sam_negative_points", i) for i, p in enumerate(body.sam_negative_points)]
            if not any(p[2] for p in points):
                raise InvalidRequest("sam_positive_points", "You neither added point prompts nor enabled GroundingDINO: "
                                                            "give sam_positive_points, or dino_enabled with dino_text_prompt")
            model = body.sam_model_name if body.sam_model_name in names else None
            request = SegmentRequest(image, points=points, model=model)
            if body.sam_model_name and model is None:
                note = f" ({body.sam_model_name} is not in Kiri's models/segmentation/; used the best available)"
        try:
            result = segment(engine, request, ctx.owner(http))
        except InvalidRequest as exc:
            raise InvalidRequest({"points": "sam_positive_points", "prompt": "dino_text_prompt",
                                  "model": "sam_model_name", "image": "input_image"}.get(exc.field, exc.field), str(exc)) from exc
        arrays = result.arrays()
        if not arrays:
            return {"msg": f"No mask found by {result.info['model']}{note}.", "blended_images": [], "masks": [],
                    "masked_images": []}
        if body.dino_enabled and len(arrays) > 1:
            # The extension merges the boxes of all the words into each candidate.
            arrays = [mask_tools.union(arrays)]
        arrays = (arrays + [arrays[0]] * SAM_CANDIDATES)[:SAM_CANDIDATES]
        return {"msg": f"Done with {result.info['model']}{note}.",
                "blended_images": [encode_png(mask_tools.overlay(image, [m])) for m in arrays],
                "masks": [encode_png(mask_tools.to_image(m)) for m in arrays],
                "masked_images": [encode_png(mask_tools.cut_out(image, m)) for m in arrays]}

    @router.post("/sam/dilate-mask")
    def sam_dilate(body: DilateMaskBody) -> dict:
        image = _image(body.input_image, "input_image", ctx.max_pixels)
        mask = mask_tools.to_array(decode_image(body.mask, "mask", max_pixels=ctx.max_pixels), "mask", image.size,
                                     ctx.max_pixels)
        grown = mask_tools.grow(mask, body.dilate_amount, "dilate_amount")
        return {"blended_image": encode_png(mask_tools.overlay(image, [grown])),
                "mask": encode_png(mask_tools.to_image(grown)), "masked_image": encode_png(mask_tools.cut_out(image, grown))}

    return router


def _sam_point(point: Any, label: int, field: str, index: int) -> list:
    if not isinstance(point, (list, tuple)) or len(point) != 2:
        raise InvalidRequest(field, f"{field}[{index}] must be [x, y]")
    return [point[0], point[1], label]
