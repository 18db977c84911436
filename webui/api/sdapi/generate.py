"""POST /sdapi/v1/txt2img and /img2img, and the progress, interrupt and skip routes."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request

from webui.engine.core.jobs import Job

from ..common import ApiContext
from . import mapping
from .fields import Img2ImgBody, Txt2ImgBody


def add_routes(router: APIRouter, ctx: ApiContext) -> None:
    engine = ctx.engine

    @router.post("/txt2img")
    def txt2img(body: Txt2ImgBody, http: Request) -> dict:
        warnings: list[str] = []
        request = mapping.txt2img_request(body, warnings, engine)
        result = engine.txt2img(request, Job(kind="txt2img", owner=ctx.owner(http)))
        result.warnings[:0] = warnings
        return mapping.response(engine, body, result, request=request)

    @router.post("/img2img")
    def img2img(body: Img2ImgBody, http: Request) -> dict:
        warnings: list[str] = []
        request = mapping.img2img_request(body, warnings, engine)
        with mapping.script_errors():
            result = engine.img2img(request, Job(kind="img2img", owner=ctx.owner(http)))
        result.warnings[:0] = warnings
        return mapping.response(engine, body, result, body.init_images if body.include_init_images else (), request)

    @router.get("/progress")
    def progress(http: Request, skip_current_image: bool = False) -> dict:
        viewer = ctx.viewer(http)
        # Only what the asker may see: its own jobs (with logins, another login's job, step and live
        # preview stay hidden: an idle answer, as A1111 gives when nothing runs); everyone's for an
        # admin or on a server without logins, its own first.
        jobs = [j for j in engine.jobs.active() if viewer.may_see(j.owner)]
        mine = [j for j in jobs if j.owner == viewer.owner]
        job = (mine or jobs or [None])[0]
        state = {"skipped": False, "interrupted": bool(job and job.interrupted), "job": job.kind if job else "",
                 "job_count": len(jobs) + len([j for j in engine.jobs.queued() if viewer.may_see(j.owner)]), "job_timestamp": "",
                 "job_no": (job.batch_no - 1) if job else 0,
                 "sampling_step": job.step if job else 0, "sampling_steps": job.steps if job else 0}
        current = None
        encoded = job.preview_bytes("png") if job is not None and not skip_current_image else None
        if encoded is not None:
            current = base64.b64encode(encoded).decode()
        return {"progress": job.fraction if job else 0.0, "eta_relative": (job.eta_seconds or 0.0) if job else 0.0,
                "state": state, "current_image": current, "textinfo": job.describe() if job else None}

    @router.post("/interrupt")
    def interrupt(http: Request) -> dict:
        """Stop the caller's running job (an admin login: every running job); queued jobs are untouched."""
        engine.interrupt(ctx.stop_scope(http))
        return {}

    @router.post("/skip")
    def skip(http: Request) -> dict:
        engine.skip(ctx.stop_scope(http))
        return {}
