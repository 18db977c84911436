"""A worker in a process of its own: job specs in, events out, both JSON lines.

    python -m webui.worker --settings '{"models_dir": "models", "outputs_dir": "outputs"}' --device cpu

stdin, one JSON object a line: a job spec {"id", "kind", "owner", "request"} (core/specs.py), or a
command for a job by its id, {"command": "interrupt" | "skip", "id": ...}. stdout, one JSON object a
line: {"event": "ready"} once the engine is built, then the job store's events (queued, started,
progress, preview, done, failed), and {"event": "refused", ...} for a line it could not act on (a
spec refused before it was queued is a "failed" event with its id). At the end of stdin the worker
finishes the jobs it was given and exits. Anything else the process prints goes to stderr.

The worker builds its own Engine through bootstrap, as launch.py does, so its results are the ones
the server would make (the same spec and seed give the same pixels). `RemoteJobs` is the parent's
side: it starts the worker and hands back its events; a Ray Serve replica would take its place.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RemoteJobs", "run_spec_in_subprocess", "main"]

TERMINAL = ("done", "failed")
_PATH_SETTINGS = ("models_dir", "outputs_dir", "extensions_dir")


# --- the worker's side ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webui.worker", description="Run Kiri job specs from stdin.")
    parser.add_argument("--settings", default="{}", help="Settings fields as a JSON object (models_dir, outputs_dir, ...)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the settings' device)")
    args = parser.parse_args(argv)

    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")  # the event stream: stdout as it was
    os.dup2(2, 1)  # what libraries print goes to stderr, never into the events
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(event: dict) -> None:
        line = json.dumps(event)
        with lock:
            events.write(line + "\n")
            events.flush()

    engine = _build_engine(json.loads(args.settings), args.device)
    engine.jobs.subscribe(send)
    send({"event": "ready"})
    jobs = []
    for line in sys.stdin:
        if line.strip():
            job = _handle(engine, line, send)
            if job is not None:
                jobs.append(job)
    while not all(job.finished for job in jobs):
        time.sleep(0.05)
    events.close()
    return 0


def _build_engine(fields: dict, device: str | None):
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.settings import Settings

    fields = {k: Path(v) if k in _PATH_SETTINGS and v is not None else v for k, v in fields.items()}
    settings = Settings(**fields)
    return build_engine(settings, DeviceChoice(device) if device else None)


def _handle(engine: Any, line: str, send) -> Any:
    """Act on one line: queue a spec (the job) or run a command (None)."""
    from webui.engine.core.errors import KiriError

    try:
        message = json.loads(line)
    except ValueError as exc:
        send({"event": "refused", "error": f"not a JSON line: {exc}"})
        return None
    if isinstance(message, dict) and "command" in message:
        job_id, command = message.get("id"), message.get("command")
        try:
            job = engine.jobs.command(job_id, command) if isinstance(job_id, str) else None
        except ValueError as exc:
            send({"event": "refused", "id": job_id, "command": command, "error": str(exc)})
            return None
        if job is None:
            send({"event": "refused", "id": job_id, "command": command, "error": f"no job {job_id!r}"})
        return None
    try:
        return engine.submit_spec(message)
    except KiriError as exc:
        job_id = message.get("id") if isinstance(message, dict) else None
        send({"event": "failed", "id": job_id, "status": "failed", "error": str(exc),
              "error_type": type(exc).__name__, "error_field": getattr(exc, "field", None)})
        return None


# --- the parent's side ------------------------------------------------------------------------------

class RemoteJobs:
    """A worker process and its events: submit(spec), command(id, name), events(id) until it ends.

    `settings`: Settings fields as plain data (models_dir, outputs_dir, ...); `device`: cpu, cuda, mps.
    """

    def __init__(self, settings: dict, device: str | None = "cpu", ready_timeout: float = 120) -> None:
        command = [sys.executable, "-m", "webui.worker", "--settings", json.dumps(settings, default=str)]
        if device:
            command += ["--device", device]
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        encoding="utf-8", bufsize=1, cwd=root, env=env)
        self._queues: dict[Any, queue.Queue] = {}
        self._queues_lock = threading.Lock()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name="kiri-remote-events", daemon=True)
        self._reader.start()
        self._next(self._queue("ready"), ready_timeout)

    def submit(self, spec: Any) -> str:
        """Send a job spec (a JobSpec or its plain dict); its id."""
        plain = spec.plain() if hasattr(spec, "plain") else dict(spec)
        plain.setdefault("id", uuid.uuid4().hex)  # the events name the job by it
        self._queue(plain["id"])
        self._write(plain)
        return plain["id"]

    def command(self, job_id: str, command: str) -> None:
        self._write({"command": command, "id": job_id})

    def events(self, job_id: str, timeout: float = 120) -> Iterator[dict]:
        """The job's events as they come, up to its done or failed event; TimeoutError after `timeout`
        seconds without one."""
        events = self._queue(job_id)
        while True:
            event = self._next(events, timeout)
            yield event
            if event.get("event") in TERMINAL:
                return

    def close(self, timeout: float = 60) -> int:
        """Close stdin (the worker finishes its jobs and exits); its exit code."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> "RemoteJobs":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def _queue(self, key: Any) -> queue.Queue:
        with self._queues_lock:
            if key not in self._queues:
                self._queues[key] = queue.Queue()
                if self._ended:
                    self._queues[key].put(None)
            return self._queues[key]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._queue("ready" if event.get("event") == "ready" else event.get("id")).put(event)
        with self._queues_lock:
            self._ended = True
            queues = list(self._queues.values())
        for waiting in queues:
            waiting.put(None)  # the worker has gone

    def _next(self, events: queue.Queue, timeout: float) -> dict:
        try:
            event = events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event from the worker in {timeout} s") from None
        if event is None:
            events.put(None)
            raise RuntimeError(f"the worker process ended (exit code {self.process.poll()})")
        return event


def run_spec_in_subprocess(spec: Any, settings: dict, device: str | None = "cpu", timeout: float = 120) -> Iterator[dict]:
    """Run one job spec in a fresh worker process and yield its events, up to done or failed."""
    with RemoteJobs(settings, device, ready_timeout=timeout) as remote:
        job_id = remote.submit(spec)
        yield from remote.events(job_id, timeout)


if __name__ == "__main__":
    raise SystemExit(main())
