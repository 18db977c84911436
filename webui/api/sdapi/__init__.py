"""AUTOMATIC1111-compatible REST routes under /sdapi/v1, calling the same engine as the UI.

One module per group of routes; fields.py holds A1111's request bodies and mapping.py turns them
into Kiri's engine requests.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..common import ApiContext, KiriRoute
from . import extras, generate, listing, loras, options


def build_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"], dependencies=ctx.dependencies(), route_class=KiriRoute)
    for module in (generate, extras, options, listing, loras):
        module.add_routes(router, ctx)
    return router
