"""The job store: every piece of model work, from every browser tab and API client, runs here.

A job is a request (plain data), a kind, an owner and, while it runs, progress (plain data too).
Its work is a generator: it does one turn of work (loading a model, one batch, one tile) between
two `yield`s. One worker thread runs the turns of all jobs, choosing each time the owner served
least recently (first come, first served within one owner). So a 50-image job gives way to
another user's single image after each batch, nothing runs the model in parallel, and no thread
waits idle between jobs. A job may run sub-stages (a hires-fix pass, a tile) inside its own turns
with `yield from`; a blocking call made from the worker thread itself runs inline, so nesting never
deadlocks.

Interrupt and Skip act on the jobs that have started, and only on those of the owner who asks
(an admin may name none to act on all): queued jobs of others always run.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

log = logging.getLogger(__name__)

Work = Callable[["Job"], Generator[None, None, Any]]
EventListener = Callable[[dict], None]

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
KEEP_FINISHED = 200  # finished jobs kept for clients that fetch results later


@dataclass
class Job:
    """One request being worked on. Everything but `work`, `result` and `error` is plain data."""

    kind: str = "txt2img"
    owner: str = "local"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = QUEUED
    image_count: int = 1  # images the job will make
    images_done: int = 0
    step: int = 0  # step within the current batch (denoising step, tile, frame)
    steps: int = 0
    batch_no: int = 0  # 1-based index of the running batch
    batch_count: int = 1
    submitted_at: float = field(default_factory=time.time)
    started_at: float = field(default_factory=time.monotonic)
    label: str = ""  # shown before the progress text, e.g. "Cell 3/8"
    preview: Any = None  # PIL image of the latest live preview, if previews are on
    preview_step: int = 0
    interrupt_requested: bool = False
    skip_requested: bool = False
    error_message: str | None = None
    work: Work | None = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    listeners: list[Callable[["Job"], None]] = field(default_factory=list, repr=False)

    # --- asked from outside ---------------------------------------------------------------
    def interrupt(self) -> None:
        self.interrupt_requested = True

    def skip(self) -> None:
        """Drop the batch being worked on and go on with the next, as AUTOMATIC1111's Skip does."""
        self.skip_requested = True

    # --- told by the work -----------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        return self.interrupt_requested

    def take_skip(self) -> bool:
        if self.skip_requested:
            self.skip_requested = False
            return True
        return False

    def start_batch(self, batch_no: int, steps: int) -> None:
        self.batch_no, self.steps, self.step = batch_no, steps, 0
        self._notify()

    def advance(self, step: int) -> None:
        self.step = step
        self._notify()

    def finish_images(self, count: int) -> None:
        self.images_done += count
        self._notify()

    # --- read by the UI and the API -------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)

    @property
    def fraction(self) -> float:
        if not self.steps:
            return 0.0
        per_batch = 1 / max(self.batch_count, 1)
        return min(1.0, (self.batch_no - 1) * per_batch + per_batch * self.step / self.steps)

    @property
    def eta_seconds(self) -> float | None:
        done = self.fraction
        if done <= 0:
            return None
        elapsed = time.monotonic() - self.started_at
        return elapsed * (1 - done) / done

    def describe(self) -> str:
        text = f"Batch {self.batch_no}/{self.batch_count}, step {self.step}/{self.steps}"
        if self.label:
            text = f"{self.label}: {text}"
        eta = self.eta_seconds
        return f"{text}, ETA {eta:.0f} s" if eta is not None else text

    def snapshot(self) -> dict:
        """The job's progress as plain data (no preview pixels): what a worker in another process sends."""
        return {
            "id": self.id, "kind": self.kind, "owner": self.owner, "status": self.status,
            "image_count": self.image_count, "images_done": self.images_done, "step": self.step, "steps": self.steps,
            "batch_no": self.batch_no, "batch_count": self.batch_count, "label": self.label,
            "fraction": self.fraction, "eta_seconds": self.eta_seconds, "text": self.describe(),
            "preview_step": self.preview_step, "interrupted": self.interrupted, "error": self.error_message,
        }

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


class JobStore:
    """Queued and running jobs, the one worker that runs them, and the events they send."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}  # every job not yet finished, by id
        self._queues: dict[str, deque[Job]] = {}  # owner -> unfinished jobs, in submission order
        self._last_turn: dict[str, int] = {}
        self._turns = itertools.count()
        self._generators: dict[str, Iterator[None]] = {}
        self._worker: threading.Thread | None = None
        self._current: Job | None = None  # the job whose turn runs now
        self._listeners: list[EventListener] = []
        self._finished: OrderedDict[str, Job] = OrderedDict()

    # --- submitting and waiting -----------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if job.work is None:
            raise ValueError("a job needs its work")
        with self._cond:
            self._jobs[job.id] = job
            self._queues.setdefault(job.owner, deque()).append(job)
            self._ensure_worker()
            self._cond.notify_all()
        self._emit(job, "queued")
        return job

    def run(self, job: Job, timeout: float | None = None) -> Any:
        """Submit and wait; called from the worker itself (a nested call), run inline instead."""
        if self.on_worker():
            return drive(job)
        self.submit(job)
        return self.wait(job, timeout)

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not job.finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {job.id} did not finish in {timeout} s")
                self._cond.wait(left)
        if job.error is not None:
            raise job.error
        return job.result

    def on_worker(self) -> bool:
        return self._worker is not None and threading.current_thread() is self._worker

    # --- asking jobs to stop ---------------------------------------------------------------
    def interrupt(self, owner: str | None) -> int:
        """Interrupt the started jobs of `owner` (of everyone when None: an admin's call)."""
        return self._tell(owner, Job.interrupt)

    def skip(self, owner: str | None) -> int:
        return self._tell(owner, Job.skip)

    def _tell(self, owner: str | None, action: Callable[[Job], None]) -> int:
        jobs = [j for j in self.active() if owner is None or j.owner == owner]
        for job in jobs:
            action(job)
        return len(jobs)

    # --- reading ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """A queued, running or recently finished job."""
        with self._cond:
            return self._jobs.get(job_id) or self._finished.get(job_id)

    def all(self) -> list[Job]:
        """Queued, running and recently finished jobs, the newest submitted first."""
        with self._cond:
            jobs = list(self._jobs.values()) + list(self._finished.values())
        return sorted(jobs, key=lambda j: j.submitted_at, reverse=True)

    def active(self) -> list[Job]:
        """Jobs that have started and not finished, the one running now first."""
        with self._cond:
            started = [j for j in self._jobs.values() if j.status == RUNNING]
            current = self._current
        return sorted(started, key=lambda j: j is not current)

    def queued(self) -> list[Job]:
        with self._cond:
            return [j for j in self._jobs.values() if j.status == QUEUED]

    def subscribe(self, listener: EventListener) -> None:
        """listener(event) for each change of a job's status: plain dicts, as a remote worker would send."""
        self._listeners.append(listener)

    # --- the worker ------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="kiri-worker", daemon=True)
            self._worker.start()

    def _next(self) -> Job:
        """Block until a job can take a turn: the first one of the owner served least recently."""
        with self._cond:
            while not self._queues:
                self._cond.wait()
            owner = min(self._queues, key=lambda o: self._last_turn.get(o, -1))
            self._last_turn[owner] = next(self._turns)
            job = self._queues[owner][0]
            self._current = job
            return job

    def _work(self) -> None:
        while True:
            job = self._next()
            finished = self._turn(job)
            with self._cond:
                self._current = None
                if finished:
                    queue = self._queues.get(job.owner)
                    if queue is not None and job in queue:
                        queue.remove(job)
                        if not queue:
                            del self._queues[job.owner]
                    self._jobs.pop(job.id, None)
                    self._generators.pop(job.id, None)
                    self._finished[job.id] = job
                    while len(self._finished) > KEEP_FINISHED:
                        self._finished.popitem(last=False)
                self._cond.notify_all()
            if finished:
                self._emit(job, job.status)

    def _turn(self, job: Job) -> bool:
        """Run one turn of `job`; True once it has finished (done or failed)."""
        generator = self._generators.get(job.id)
        if generator is None:
            job.status, job.started_at = RUNNING, time.monotonic()
            self._emit(job, "started")
            generator = self._generators[job.id] = job.work(job)  # type: ignore[misc]
        try:
            next(generator)
            return False
        except StopIteration as stop:
            job.result, job.status = stop.value, DONE
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the job
            job.error, job.error_message, job.status = exc, str(exc), FAILED
            if not _is_user_error(exc):
                log.exception("job %s (%s) failed", job.id, job.kind)
        return True

    def _emit(self, job: Job, event: str) -> None:
        data = {"event": event, **job.snapshot()}
        for listener in list(self._listeners):
            try:
                listener(data)
            except Exception:  # noqa: BLE001 - a listener must not stop the worker
                log.exception("job event listener failed")


def drive(job: Job) -> Any:
    """Run a job's work to the end in this thread (nested calls, tests, scripts)."""
    job.status, job.started_at = RUNNING, time.monotonic()
    generator = job.work(job)  # type: ignore[misc]
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        job.result, job.status = stop.value, DONE
        return stop.value
    except BaseException as exc:
        job.error, job.error_message, job.status = exc, str(exc), FAILED
        raise


def _is_user_error(exc: BaseException) -> bool:
    from webui.engine.core.errors import KiriError

    return isinstance(exc, KiriError)
