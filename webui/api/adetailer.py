"""The routes of the ADetailer extension, whose clients exist: GET /adetailer/v1/version and
GET /adetailer/v1/ad_model (what a unit's ad_model can name). Generation itself comes through
/sdapi/v1 with alwayson_scripts.ADetailer, read by the detailer's add-on spec (engine/detailer/)."""

from __future__ import annotations

from fastapi import APIRouter

from webui.engine import detailer

from .common import ApiContext, KiriRoute


def build_router(ctx: ApiContext) -> APIRouter:
    engine = ctx.engine
    router = APIRouter(prefix="/adetailer/v1", tags=["adetailer"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    @router.get("/version")
    def version() -> dict:
        return {"version": detailer.VERSION}

    @router.get("/ad_model")
    def ad_model() -> dict:
        return {"ad_model": detailer.ad_models(engine)}

    return router
