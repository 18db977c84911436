"""Kiri's own routes under /kiri/v1: jobs as plain data, on the engine's own request schema.

POST /kiri/v1/jobs {"kind": "txt2img", "request": {...Txt2ImgRequest fields...}} queues a job
and answers at once with its id; GET /kiri/v1/jobs/{id} gives its progress and, once finished,
its result (images as {"__image__": base64 PNG}, read back from the result kept on disk:
core/results.py). POST /kiri/v1/jobs/{id}/interrupt and /skip stop one job by its id. The request fields are the engine's dataclass
fields, the same schema the UI fills in. /kiri/v1/models lists the catalog by kind. POST /kiri/v1/tokens
{"prompt": ...} counts a prompt's tokens as the prompt box's counter does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from webui.engine.generation.tokens import prompt_tokens

from .common import ApiContext, KiriRoute


class TokensBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    steps: int = Field(20, ge=1, le=1000)  # for editing and alternation: the texts the schedule gives


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "txt2img"
    request: dict[str, Any] = Field(default_factory=dict)


def build_router(ctx: ApiContext) -> APIRouter:
    engine = ctx.engine
    router = APIRouter(prefix="/kiri/v1", tags=["kiri"], dependencies=ctx.dependencies(), route_class=KiriRoute)

    @router.post("/jobs")
    def submit(body: JobBody, http: Request) -> dict:
        job = engine.submit_plain(body.kind, body.request, ctx.owner(http))
        return job.snapshot()

    def visible_job(job_id: str, http: Request):
        """The job, if the asker may see it; another login's job answers as if it did not exist."""
        job = engine.jobs.get(job_id)
        if job is None or not ctx.viewer(http).may_see(job.owner):
            raise HTTPException(404, detail=f"no job {job_id!r} of yours (finished jobs are kept for a while, then dropped)")
        return job

    @router.get("/jobs")
    def list_jobs(http: Request) -> list[dict]:
        """The asker's queued, running and recently finished jobs (everyone's for an admin), newest first."""
        viewer = ctx.viewer(http)
        return [job.snapshot() for job in engine.jobs.all() if viewer.may_see(job.owner)]

    @router.get("/jobs/{job_id}")
    def status(job_id: str, http: Request) -> dict:
        job = visible_job(job_id, http)
        answer = job.snapshot()
        if job.status == "done":
            try:
                answer["result"] = engine.jobs.result_plain(job)
            except FileNotFoundError:
                raise HTTPException(410, detail=f"the result of job {job_id!r} was removed from the outputs folder") from None
        return answer

    def command(job_id: str, name: str, http: Request) -> dict:
        job = visible_job(job_id, http)
        if ctx.stop_scope(http) not in (None, job.owner):
            raise HTTPException(403, detail=f"only the job's owner (or an admin) can {name} it")
        engine.jobs.command(job.id, name)
        return job.snapshot()

    @router.post("/jobs/{job_id}/interrupt")
    def interrupt(job_id: str, http: Request) -> dict:
        """Stop the job (what it finished is kept)."""
        return command(job_id, "interrupt", http)

    @router.post("/jobs/{job_id}/skip")
    def skip(job_id: str, http: Request) -> dict:
        """Drop the batch the job works on and go on with the next."""
        return command(job_id, "skip", http)

    @router.get("/models")
    def models() -> dict:
        engine.catalog.entries or engine.catalog.scan()
        return {kind: [{"name": e.name, "format": e.format, "family": e.family, "size_bytes": e.size_bytes,
                        "quantization": e.quantization, "few_step": _few_step(e.few_step)}
                       for e in engine.catalog.of_kind(kind)] for kind in engine.catalog.kinds}

    @router.get("/addons")
    def addons() -> list[str]:
        return engine.addons.names()

    @router.post("/tokens")
    def tokens(body: TokensBody) -> dict:
        """The prompt box's counter (A1111's "12/75"): tokens and what the chunks hold, counted with the
        loaded checkpoint's tokenizer or the default one's from disk (never loading a model); nulls
        when there is none."""
        counted = prompt_tokens(engine, body.prompt, body.steps)
        return {"tokens": counted[0], "max": counted[1]} if counted else {"tokens": None, "max": None}

    return router


def _few_step(recipe) -> dict | None:
    """A few-step model's recipe as the defaults a request without sampler, steps or CFG gets."""
    if recipe is None:
        return None
    return {"kind": recipe.kind, "sampler_name": recipe.sampler, "scheduler": recipe.scheduler, "steps": recipe.steps,
            "cfg_scale": recipe.cfg_scale, "source": recipe.source}
