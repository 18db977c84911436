"""LoRAs as AUTOMATIC1111's API lists them: `GET /sdapi/v1/loras` -> [{name, alias, path, metadata}]
(the safetensors header's training metadata, read without loading a tensor) and `POST
/sdapi/v1/refresh-loras` (rescan models/Lora/ and models/LyCORIS/). A request uses one with
`<lora:name:weight>` in its prompt, or `"addons": {"lora": [{"name": ..., "weight": ...}]}`."""

from __future__ import annotations

from fastapi import APIRouter

from webui.engine.lora import NAME, list_loras

from ..common import ApiContext
from .options import shown_path


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    @router.get("/loras")
    def loras() -> list[dict]:
        engine.catalog.of_kind(NAME) or engine.catalog.scan()
        return [{"name": item["name"], "alias": item["alias"], "path": shown_path(ctx, item["path"]),
                 "metadata": item["metadata"]} for item in list_loras(engine.catalog)]

    @router.post("/refresh-loras")
    def refresh_loras() -> None:
        engine.catalog.scan()
