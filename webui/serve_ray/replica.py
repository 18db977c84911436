"""A Ray Serve replica of Kiri's engine: job specs in, the job store's events out.

Each replica builds its own Engine through bootstrap, as launch.py and webui/worker.py do, so a spec run
here makes the pixels the single process makes for the same seed. `run(spec)` streams the job's events
(core/specs.py: started, progress, preview, done, failed), each stamped with the replica that ran it;
the done event's result is plain data with every picture as PNG bytes ({"__png__": bytes}), never a
path on this replica's disk.

The checkpoint a job names is its multiplexed model id (Ray Serve model multiplexing), so Serve routes
the job to a replica that holds it; loading it goes through the engine's own model manager (its LRU),
and each load is counted per replica (`loads` in every event).

Interrupt and Skip come by job id through a small named actor (`Control`): the replica running the job
takes the commands for it while it streams the job's events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import ray
from ray import serve

log = logging.getLogger(__name__)

NAMESPACE = "kiri"
CONTROL = "kiri-control"
PNG_KEY = "__png__"
OUT_KEY = "__out__"  # a file (or folder) the job wrote under the outputs: {"__out__": relative path, "data": bytes}
COMMAND_POLL_S = 0.2
TERMINAL = ("done", "failed")


@ray.remote(num_cpus=0)
class Control:
    """Commands for jobs by id, waiting for the replica that runs the job to take them."""

    def __init__(self) -> None:
        self.commands: dict[str, list[str]] = {}

    def send(self, job_id: str, command: str) -> None:
        self.commands.setdefault(job_id, []).append(command)

    def take(self, job_id: str) -> list[str]:
        return self.commands.pop(job_id, [])


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What Serve's multiplexing keeps per model id: the engine's model manager holds the weights."""

    name: str


class KiriReplica:
    """One replica: its own Engine, the jobs it is sent, the checkpoint loads it made."""

    def __init__(self, settings: dict, device: str | None = "cpu", threads: int = 0) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from webui.worker import _build_engine

        self.engine = _build_engine(settings, device)
        self.engine.jobs.results = None  # results go back to the front as bytes, never to this replica's disk
        self.engine.catalog.scan()
        self.loads: Counter[str] = Counter()
        self.engine.hooks.on_model_loaded.append(lambda model: self.loads.update([model.name]))
        self.pid = os.getpid()
        try:
            self.name = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (a direct test)
            self.name = f"pid-{self.pid}"
        self._control = None

    async def load(self, model_id: str) -> LoadedCheckpoint:
        """The checkpoint `model_id` loaded as a job of this replica's engine (its LRU keeps it)."""
        await asyncio.to_thread(self.engine.load_model, model_id or None, "kiri:routing")
        return LoadedCheckpoint(model_id)

    def about(self) -> dict:
        return {"replica": self.name, "pid": self.pid, "loads": dict(self.loads)}

    async def run(self, spec: dict) -> AsyncIterator[dict]:
        """The events of one job spec, up to its done or failed event."""
        from webui.engine.core.errors import KiriError

        model_id = serve.get_multiplexed_model_id()
        if model_id:
            await self.get_model(model_id)  # type: ignore[attr-defined] - set by make_deployment
        events: queue.Queue = queue.Queue()
        job_id = spec.get("id")

        def listener(event: dict) -> None:
            if event.get("id") == job_id:
                events.put(event)

        self.engine.jobs.subscribe(listener)
        try:
            try:
                job = self.engine.submit_spec(spec)
            except KiriError as exc:
                yield {"event": "failed", "id": job_id, "status": "failed", "error": str(exc),
                       "error_type": type(exc).__name__, "error_field": getattr(exc, "field", None), **self.about()}
                return
            polled = time.monotonic()
            while True:
                try:
                    event = await asyncio.to_thread(events.get, True, COMMAND_POLL_S)
                except queue.Empty:
                    event = None
                if time.monotonic() - polled >= COMMAND_POLL_S:  # an actor call per poll, not per event
                    polled = time.monotonic()
                    await self._take_commands(job_id)
                if event is None:
                    continue
                if event["event"] == "done":
                    result = await asyncio.to_thread(self._result, job)
                    yield {**event, "result": result, **self.about()}
                    return
                yield {**event, **self.about()}
                if event["event"] == "failed":
                    return
        finally:
            self.engine.jobs.unsubscribe(listener)

    async def stats(self) -> dict:
        return self.about()

    def _result(self, job: Any) -> Any:
        """The finished job's result as plain data, each picture PNG bytes."""
        from webui.engine.core.plain import dump

        result = self.engine.jobs.wait(job)
        plain = _files_as_bytes(dump(result, image=lambda image: {PNG_KEY: _png(image)}, fields=True))
        return _outputs_as_bytes(plain, Path(self.engine.settings.outputs_dir))

    async def _take_commands(self, job_id: str) -> None:
        if self._control is None:
            try:
                self._control = ray.get_actor(CONTROL, namespace=NAMESPACE)
            except ValueError:
                return
        for command in await self._control.take.remote(job_id):
            self.engine.jobs.command(job_id, command)


def make_deployment(models_per_replica: int = 1, **options: Any):
    """The Serve deployment of KiriReplica; `models_per_replica`: the checkpoints Serve's multiplexing
    counts per replica (the engine's `model_cache_size`, its own LRU)."""

    class KiriEngine(KiriReplica):
        @serve.multiplexed(max_num_models_per_replica=models_per_replica)
        async def get_model(self, model_id: str) -> LoadedCheckpoint:
            return await self.load(model_id)

    return serve.deployment(KiriEngine, name="KiriEngine", **options)


def _files_as_bytes(value: Any) -> Any:
    """{"__file__": path} references (a record from disk) as {"__png__": the file's bytes}."""
    if isinstance(value, dict):
        if set(value) == {"__file__"}:
            return {PNG_KEY: Path(value["__file__"]).read_bytes()}
        return {k: _files_as_bytes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_files_as_bytes(v) for v in value]
    return value


def _outputs_as_bytes(value: Any, root: Path) -> Any:
    """Paths of files the job wrote under the outputs (a clip, its frames: a video job's result) as their
    bytes and their path relative to the outputs root, so the front writes them into its own outputs (on
    another node this replica's disk is not the front's); a folder as its relative path."""
    if isinstance(value, dict):
        return {k: _outputs_as_bytes(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_outputs_as_bytes(v, root) for v in value]
    if isinstance(value, str) and value.startswith(os.sep):
        path = Path(value)
        try:
            relative = path.resolve().relative_to(root.resolve())
        except (ValueError, OSError):
            return value
        if path.is_file():
            return {OUT_KEY: relative.as_posix(), "data": path.read_bytes()}
        if path.is_dir():
            return {OUT_KEY: relative.as_posix()}
    return value


def _png(image: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
