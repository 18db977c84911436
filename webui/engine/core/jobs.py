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
(an admin may name none to act on all): queued jobs of others always run. `command(id, name)` acts
on one job by its id, as a job spec's sender does (core/specs.py).

The store sends plain-dict events (queued, started, progress, preview, done, failed: core/specs.py)
to its subscribers.

Cross-request batching is a seam here, filled by a capability: when `merge_limit()` is above 1, a
job whose work has a `batch_key` (not None) and a `together(group)` (the `Batchable` protocol) runs
in a `JobGroup` with the first jobs, not started, of other owners whose work has an equal key, at
most `merge_limit()` jobs; such jobs join the group while it is open (until the work starts its
batch), so requests that arrive while it sets up ride along. The group's turns are one generator;
each turn counts as a turn of every owner in it, and only owners' first jobs join, so nobody's jobs
are reordered and a user outside the group waits at most the group's turn. `together` returns {job id: result or exception}, so
each job of the group finishes (or fails) on its own. A finished job's result goes to disk as plain data (core/results.py) and the
job drops it once its waiting caller has taken it (or at once, when no caller waits): 200 finished
jobs no longer hold their pictures in memory. Which results go to disk is the archive's choice
(the Engine's: jobs that came as plain data, a JobSpec; a UI tab or /sdapi hands its result to the
caller that waits for it).

Workers in other processes are a seam here too: `workers` (1 unless a dispatcher sets it) is how many
threads take turns. With one, nothing changes. A dispatcher that runs jobs elsewhere (webui/serve_ray:
one thread per Ray Serve replica, each turn a whole job waiting on its replica) sets it to the number of
replicas; each thread takes the next turn by the same fair rule, skipping jobs whose turn runs on
another thread, so the next owner's job goes to the next free replica.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generator, Hashable, Iterator, Protocol, runtime_checkable

from webui.engine.core.plain import dump
from webui.engine.core.specs import COMMANDS, ProgressThrottle, failed_event, job_event, preview_event

if TYPE_CHECKING:
    from webui.engine.core.results import ResultArchive

log = logging.getLogger(__name__)

Work = Callable[["Job"], Generator[None, None, Any]]
EventListener = Callable[[dict], None]

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
KEEP_FINISHED = 200  # finished jobs kept for clients that fetch results later


@runtime_checkable
class Batchable(Protocol):
    """Work that may run in one group with other jobs' work of an equal `batch_key` (None: alone)."""

    batch_key: Hashable | None

    def __call__(self, job: "Job") -> Generator[None, None, Any]: ...

    def together(self, group: "JobGroup") -> Generator[None, None, dict[str, Any]]:
        """The turns of `group.jobs` (this work's job first) as one generator, returning {job id: its result,
        or the exception it failed with}. Jobs may join the list between turns while `group.open`; the
        work sets it False once it takes no more (its batch has begun)."""
        ...


@dataclass(eq=False)
class JobGroup:
    """Jobs run together (Batchable work of an equal key): one generator for all of their turns."""

    key: Hashable
    jobs: list["Job"]
    open: bool = True
    generator: Iterator[None] | None = None


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
    note: str = ""  # shown after it: what the job chose for itself, e.g. its memory mode (core/memory.py)
    preview_step: int = 0
    interrupt_requested: bool = False
    skip_requested: bool = False
    error_message: str | None = None
    work: Work | None = field(default=None, repr=False)
    result: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    listeners: list[Callable[["Job"], None]] = field(default_factory=list, repr=False)
    preview_listeners: list[Callable[["Job"], None]] = field(default_factory=list, repr=False)
    spec: dict | None = field(default=None, repr=False)  # the job spec (core/specs.py) it came from, if any
    result_file: str | None = None  # the result as plain data on disk (core/results.py), once finished
    result_taken: bool = False  # a waiting caller has had the result
    result_dropped: bool = False  # the job let go of its result (on disk only, if it was kept there)
    waiters: int = field(default=0, repr=False)  # callers waiting for the result (JobStore.wait)
    # (the latest live preview as a PIL image, {format: its encoded bytes}); once the job finishes, only
    # its PNG bytes are kept: `preview` decodes them if asked.
    _preview: tuple = field(default_factory=lambda: (None, {}), init=False, repr=False)

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

    @property
    def preview(self) -> Any:
        """The latest live preview as a PIL image (None when previews are off), for the UI."""
        image, encoded = self._preview
        if image is None and "png" in encoded:
            return _decode(encoded["png"])
        return image

    @preview.setter
    def preview(self, image: Any) -> None:
        self._preview = (image, {})

    def show_preview(self, image: Any, step: int) -> None:
        """A new live preview (a PIL image): kept for the UI, sent encoded to the store's subscribers."""
        self._preview, self.preview_step = (image, {}), step
        for listener in list(self.preview_listeners):
            listener(self)

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
        text = f"{text}, ETA {eta:.0f} s" if eta is not None else text
        return f"{text}; {self.note}" if self.note else text

    def snapshot(self) -> dict:
        """The job's progress as plain data (no preview pixels): what a worker in another process sends."""
        return {
            "id": self.id, "kind": self.kind, "owner": self.owner, "status": self.status,
            "image_count": self.image_count, "images_done": self.images_done, "step": self.step, "steps": self.steps,
            "batch_no": self.batch_no, "batch_count": self.batch_count, "label": self.label, "note": self.note,
            "fraction": self.fraction, "eta_seconds": self.eta_seconds, "text": self.describe(),
            "preview_step": self.preview_step, "interrupted": self.interrupted, "error": self.error_message,
        }

    def preview_bytes(self, format: str = "webp") -> bytes | None:
        """The latest preview encoded as `format` (webp or png), encoded once per preview."""
        image, encoded = self._preview  # one preview and its encodings, whatever the worker sets meanwhile
        if format not in encoded:
            if image is None:
                image = _decode(encoded["png"]) if "png" in encoded else None
                if image is None:
                    return None
            encoded[format] = _encode(image, format)
        return encoded[format]

    def pack_preview(self) -> None:
        """Keep the preview as PNG bytes only (a finished job holds no pictures)."""
        image, encoded = self._preview
        if image is not None:
            self._preview = (None, {"png": encoded.get("png") or _encode(image, "png")})

    def preview_plain(self) -> dict | None:
        """The latest preview as plain data: {"format": "webp", "data": base64} (png where WebP is missing)."""
        import base64

        for format in ("webp", "png"):
            try:
                data = self.preview_bytes(format)
            except (KeyError, OSError):  # a Pillow built without WebP
                continue
            return None if data is None else {"format": format, "data": base64.b64encode(data).decode()}
        return None

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


class JobStore:
    """Queued and running jobs, the one worker that runs them, and the events they send."""

    def __init__(self, results: "ResultArchive | None" = None, load_result: Callable[[str, Any], Any] | None = None,
                 merge_limit: Callable[[], int] = lambda: 1) -> None:
        """`results`: where finished results go (None: they stay on the job, in memory); `load_result(kind,
        record)`: a result read back from disk as the typed result a waiting caller expects; `merge_limit()`:
        how many jobs of different owners may start as one group (1: none merged)."""
        self.merge_limit = merge_limit
        self._groups: dict[str, JobGroup] = {}  # job id -> the group it runs in, while it runs
        self.results, self._load_result = results, load_result
        self._throttle = ProgressThrottle()
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}  # every job not yet finished, by id
        self._queues: dict[str, deque[Job]] = {}  # owner -> unfinished jobs, in submission order
        self._last_turn: dict[str, int] = {}
        self._turns = itertools.count()
        self._generators: dict[str, Iterator[None]] = {}
        self.workers = 1  # threads taking turns: 1 in one process; a dispatcher's replicas (see the docstring)
        self._threads: list[threading.Thread] = []
        self._busy: set[str] = set()  # ids of the jobs whose turn runs now (on some thread)
        self._current: Job | None = None  # the job whose turn started last
        self._listeners: list[EventListener] = []
        self._finished: OrderedDict[str, Job] = OrderedDict()

    # --- submitting and waiting -----------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if job.work is None:
            raise ValueError("a job needs its work")
        job.listeners.append(self._on_progress)
        job.preview_listeners.append(self._on_preview)
        with self._cond:
            if job.id in self._jobs or job.id in self._finished:
                raise ValueError(f"a job with id {job.id!r} is in the store already")
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
        with self._cond:
            job.waiters += 1  # before it is queued: the result must wait for us, however fast the job
        try:
            self.submit(job)
            return self.wait(job, timeout)
        finally:
            self._release(job)

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        """The job's result once it finishes (its error raised); read back from disk when the job
        already gave it away (finished before anyone waited)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            job.waiters += 1
        try:
            with self._cond:
                while not job.finished:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"job {job.id} did not finish in {timeout} s")
                    self._cond.wait(left)
                result, dropped = job.result, job.result_dropped
                job.result_taken = True
            if job.error is not None:
                raise job.error
            if dropped and self.results is not None:
                record = self.results.read(job)
                return self._load_result(job.kind, record) if self._load_result is not None else record
            return result
        finally:
            self._release(job)

    def result_plain(self, job: Job) -> Any:
        """A finished job's result as plain data, pictures as {"__image__": base64}: from memory while its
        caller has not taken it, else from disk (FileNotFoundError once the record was removed)."""
        with self._cond:
            result, dropped, kept = job.result, job.result_dropped, job.result_file is not None
        if not dropped:
            return dump(result)
        if not kept or self.results is None:
            return None  # a job run by a waiting caller (a UI tab, /sdapi) handed its result to that caller
        from webui.engine.core.results import inline_files

        return inline_files(self.results.read(job))

    def _release(self, job: Job) -> None:
        with self._cond:
            job.waiters = max(0, job.waiters - 1)
            self._drop_result(job)

    def _drop_result(self, job: Job) -> None:
        """Forget the in-memory result of a finished job that no caller waits for, once it is on disk
        or a caller has had it."""
        if job.finished and job.waiters == 0 and not job.result_dropped and (job.result_file is not None or job.result_taken):
            job.result_dropped = True
            job.result = None

    def on_worker(self) -> bool:
        return threading.current_thread() in self._threads

    # --- asking jobs to stop ---------------------------------------------------------------
    def interrupt(self, owner: str | None) -> int:
        """Interrupt the started jobs of `owner` (of everyone when None: an admin's call)."""
        return self._tell(owner, Job.interrupt)

    def skip(self, owner: str | None) -> int:
        return self._tell(owner, Job.skip)

    def command(self, job_id: str, command: str) -> Job | None:
        """Interrupt or skip one job by its id (what a job spec's sender, or the API, asks); the job,
        or None when the store has no such job. Whose job it is, is the caller's check."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
        job = self.get(job_id)
        if job is not None and not job.finished:
            job.interrupt() if command == "interrupt" else job.skip()
        return job

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
        """listener(event) for each event of every job: plain dicts (core/specs.py), as a remote worker sends."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: EventListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- the worker ------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < max(1, self.workers):
            name = "kiri-worker" if not self._threads else f"kiri-worker-{len(self._threads) + 1}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def _candidate(self) -> Job | None:
        """The first job, not in a turn on another thread, of the owner served least recently."""
        for owner in sorted(self._queues, key=lambda o: self._last_turn.get(o, -1)):
            for job in self._queues[owner]:
                if job.id not in self._busy:
                    return job
        return None

    def _next(self) -> Job:
        """Block until a job can take a turn: the first one of the owner served least recently."""
        with self._cond:
            while (job := self._candidate()) is None:
                self._cond.wait()
            group = self._groups.get(job.id) or self._group_for(job)
            if group is not None:
                self._gather(group)
            turn = next(self._turns)
            for member in (group.jobs if group else [job]):
                self._last_turn[member.owner] = turn  # a group's turn is a turn of each owner in it
                self._busy.add(member.id)
            self._current = job
            return job

    def _group_for(self, job: Job) -> JobGroup | None:
        """The group `job` (not started, its work Batchable) runs in: an open one of an equal key with room,
        else a new one; None when it runs alone (merging off, no key)."""
        limit, key = self.merge_limit(), getattr(job.work, "batch_key", None)
        if limit <= 1 or key is None or job.id in self._generators or not isinstance(job.work, Batchable):
            return None
        group = next((g for g in dict.fromkeys(self._groups.values()) if g.open and g.key == key and len(g.jobs) < limit),
                     None) or JobGroup(key, [])
        group.jobs.append(job)
        self._groups[job.id] = group
        return group

    def _gather(self, group: JobGroup) -> None:
        """Other owners' first jobs, not started, of the group's key join it while it is open (owners served
        least recently first): the jobs asked for while it set up ride in its batch."""
        limit = self.merge_limit()
        for owner in sorted(self._queues, key=lambda o: self._last_turn.get(o, -1)):
            if not group.open or len(group.jobs) >= limit:
                return
            other = self._queues[owner][0]
            if (other.status == QUEUED and other.id not in self._generators and other.id not in self._groups
                    and getattr(other.work, "batch_key", None) == group.key):
                group.jobs.append(other)
                self._groups[other.id] = group

    def _work(self) -> None:
        while True:
            job = self._next()
            group = self._groups.get(job.id)
            if group is None:
                self._after_turn(job, self._turn(job))
                continue
            done = self._group_turn(group)
            if done:
                with self._cond:
                    for member in group.jobs:
                        self._groups.pop(member.id, None)
            for member in group.jobs:
                self._after_turn(member, done)

    def _group_turn(self, group: JobGroup) -> bool:
        """One turn of a group; True once it has finished, each job done or failed by its own outcome."""
        for job in group.jobs:
            if job.status == QUEUED:  # a job that joined since the last turn
                job.status, job.started_at = RUNNING, time.monotonic()
                self._emit(job, "started")
        if group.generator is None:
            group.generator = group.jobs[0].work.together(group)  # type: ignore[union-attr]
        try:
            next(group.generator)
            return False
        except StopIteration as stop:
            outcomes = stop.value or {}
        except BaseException as exc:  # noqa: BLE001 - the group itself failed: each of its jobs did
            log.exception("jobs %s (run together) failed", ", ".join(j.id for j in group.jobs))
            outcomes = {job.id: exc for job in group.jobs}
        for job in group.jobs:
            outcome = outcomes.get(job.id, RuntimeError("the group that ran this job gave no result for it"))
            if isinstance(outcome, BaseException):
                job.error, job.error_message, job.status = outcome, str(outcome), FAILED
            else:
                job.result, job.status = outcome, DONE
        return True

    def _after_turn(self, job: Job, finished: bool) -> None:
        record = self._archive(job) if finished else None
        if finished:
            job.pack_preview()
        evicted: list[Job] = []
        with self._cond:
            self._current = None
            self._busy.discard(job.id)
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
                    evicted.append(self._finished.popitem(last=False)[1])
                self._drop_result(job)
            self._cond.notify_all()
        if finished:
            for old in evicted:
                if self.results is not None and old.result_file is not None:
                    self.results.remove(old)
            self._throttle.forget(job.id)
            if job.status == FAILED:
                self._send(failed_event(job))
            else:
                self._send(job_event(job, DONE, **({"result": record} if record is not None else {})))

    def _archive(self, job: Job) -> Any:
        """Write a finished job's result to disk; the record (plain data) or None."""
        if self.results is None or job.status != DONE or job.result is None or not self.results.wants(job):
            return None
        try:
            path, record = self.results.write(job, job.result)
        except Exception:  # noqa: BLE001 - the result then stays in memory, as it did before
            log.exception("could not keep the result of job %s (%s) on disk", job.id, job.kind)
            return None
        job.result_file = str(path)
        return record

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

    def _on_progress(self, job: Job) -> None:
        if self._listeners and job.status == RUNNING and self._throttle.due(job, time.monotonic()):
            self._emit(job, "progress")

    def _on_preview(self, job: Job) -> None:
        if self._listeners:
            event = preview_event(job)
            if event is not None:
                self._send(event)

    def _emit(self, job: Job, event: str) -> None:
        self._send(job_event(job, event))

    def _send(self, data: dict) -> None:
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


def _encode(image: Any, format: str) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=format.upper())
    return buffer.getvalue()


def _decode(data: bytes) -> Any:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def _is_user_error(exc: BaseException) -> bool:
    from webui.engine.core.errors import KiriError

    return isinstance(exc, KiriError)
