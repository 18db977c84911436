"""Kiri's HTTP API: one router module per route family, all on the same engine as the UI.

`server_app_kwargs()` hands the routes and the body-size middleware to the app Gradio creates,
so they exist before the server answers its first request (adding them after launch() left a
moment when the page was served and /sdapi/v1 answered 404).
"""

from __future__ import annotations

from typing import Any

from .common import EXCEPTION_HANDLERS, ApiContext
from .middleware import BodyLimit

DEFAULT_MAX_BODY = 50 * 2**20


def routers(ctx: ApiContext) -> list:
    from . import adetailer, controlnet, kiri, library, sdapi, segment, video

    return [sdapi.build_router(ctx), kiri.build_router(ctx), segment.build_router(ctx), video.build_router(ctx),
            controlnet.build_router(ctx), adetailer.build_router(ctx), library.build_router(ctx)]


def server_app_kwargs(ctx: ApiContext, max_body_bytes: int = DEFAULT_MAX_BODY, ui_logins: bool = False) -> dict[str, Any]:
    """FastAPI constructor arguments: our routes and middleware, present from the first request.
    `ui_logins`: the browser UI has logins, so Gradio's file route serves each login only its own
    outputs (api/files.py)."""
    from starlette.middleware import Middleware

    from .files import OutputFiles

    routes = [route for router in routers(ctx) for route in router.routes]
    middleware = [Middleware(BodyLimit, max_bytes=max_body_bytes),
                  Middleware(OutputFiles, outputs_dir=ctx.engine.settings.outputs_dir, logins=ui_logins, admins=ctx.admins)]
    return {"docs_url": "/docs", "routes": routes, "middleware": middleware,
            # For the whole app: a 422 reply that renders whatever the client sent (raw NaN included).
            "exception_handlers": dict(EXCEPTION_HANDLERS)}


def mount(app, ctx: ApiContext, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
    """Add the routes and the body cap to a FastAPI app that is not serving yet (tests, embedding)."""
    for router in routers(ctx):
        app.include_router(router)
    for exc_class, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
