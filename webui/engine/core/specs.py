"""Jobs as plain data: the spec a process is asked to run, and the events it sends back.

A job spec is all another process needs to run a job: `{"id", "kind", "owner", "request"}`, the
request being the kind's fields as plain data (core/plain.py: images as {"__image__": base64 PNG}).
It round-trips through JSON, so a worker in another process (webui/worker.py), or later a Ray
Serve replica, runs it exactly as the engine in this process would.

What comes back are events, plain dicts that `json.dumps` takes as they are:

    {"event": "queued" | "started", **snapshot}
    {"event": "progress", **snapshot}                   step, steps, batch_no, fraction, eta_seconds
    {"event": "preview", "id", "step", "image": {"format": "webp" | "png", "data": base64}}
    {"event": "done", **snapshot, "result": record}     record: plain data, images as {"__file__": path}
    {"event": "failed", **snapshot, "error": message, "error_type": "InvalidRequest", "error_field": "steps"}

(`snapshot` is Job.snapshot(): id, kind, owner, status, image_count, images_done, step, steps,
batch_no, batch_count, fraction, eta_seconds, text...) Commands go the other way, by job id:
`{"command": "interrupt" | "skip", "id": ...}`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from webui.engine.core.errors import InvalidRequest

Job = Any  # core/jobs.py's Job (it imports this module, so the name is not imported back)

__all__ = ["JobSpec", "COMMANDS", "job_event", "preview_event", "failed_event", "ProgressThrottle"]

COMMANDS = ("interrupt", "skip")
PROGRESS_EVERY_S = 0.2  # progress events of one job at most this often (a batch's first and last step always)


@dataclass(frozen=True)
class JobSpec:
    """A job as plain data: its kind, owner and request fields. `id` is the job's id everywhere."""

    kind: str
    request: dict[str, Any] = field(default_factory=dict)
    owner: str = "local"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def plain(self) -> dict:
        return {"id": self.id, "kind": self.kind, "owner": self.owner, "request": self.request}

    @classmethod
    def from_plain(cls, data: Any) -> "JobSpec":
        """The spec from a decoded JSON object; a wrong shape is refused naming the key."""
        if not isinstance(data, dict):
            raise InvalidRequest("spec", "a job spec must be an object with kind, owner, request (and id)")
        unknown = set(data) - {"id", "kind", "owner", "request"}
        if unknown:
            raise InvalidRequest(f"spec.{sorted(unknown)[0]}", f"spec.{sorted(unknown)[0]} is not a field of a job spec; "
                                                               "its fields are id, kind, owner, request")
        for key in ("id", "kind", "owner"):
            if key in data and not (isinstance(data[key], str) and data[key]):
                raise InvalidRequest(key, f"{key} must be a non-empty string")
        if "kind" not in data:
            raise InvalidRequest("kind", "a job spec needs its kind")
        request = data.get("request", {})
        if not isinstance(request, dict):
            raise InvalidRequest("request", "request must be an object of the task's fields")
        values = {k: data[k] for k in ("id", "owner") if k in data}
        return cls(kind=data["kind"], request=request, **values)


def job_event(job: Job, event: str, **extra: Any) -> dict:
    return {"event": event, **job.snapshot(), **extra}


def preview_event(job: Job) -> dict | None:
    """The job's latest live preview as encoded bytes (encoded once, cached on the job)."""
    image = job.preview_plain()
    if image is None:
        return None
    return {"event": "preview", "id": job.id, "step": job.preview_step, "image": image}


def failed_event(job: Job) -> dict:
    error = job.error
    return job_event(job, "failed", error_type=type(error).__name__ if error is not None else None,
                     error_field=getattr(error, "field", None))


class ProgressThrottle:
    """Whether a job's progress is worth an event now: a batch's first and last step always, other
    steps when PROGRESS_EVERY_S has passed since the job's last progress event."""

    def __init__(self, every_s: float = PROGRESS_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def due(self, job: Job, now: float) -> bool:
        edge = job.step in (0, job.steps)
        if not edge and now - self._last.get(job.id, float("-inf")) < self.every_s:
            return False
        self._last[job.id] = now
        return True

    def forget(self, job_id: str) -> None:
        self._last.pop(job_id, None)
