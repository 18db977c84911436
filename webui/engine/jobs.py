"""A job's progress and its interrupt flag, shared between the worker and whoever watches it."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

ProgressListener = Callable[["Job"], None]


@dataclass
class Job:
    """One request being worked on: what step it is at, and whether it was asked to stop."""

    kind: str = "txt2img"
    owner: str = "local"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    image_count: int = 1  # images the job will make
    images_done: int = 0
    step: int = 0  # denoising step within the current batch
    steps: int = 0
    batch_no: int = 0  # 1-based index of the running batch
    batch_count: int = 1
    started_at: float = field(default_factory=time.monotonic)
    label: str = ""  # shown before the progress text, e.g. "Cell 3/8"
    preview: Any = None  # PIL image of the latest live preview, if previews are on
    preview_step: int = 0
    listeners: list[ProgressListener] = field(default_factory=list)
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        """Drop the batch being denoised and go on with the next, as AUTOMATIC1111's Skip does."""
        self._skip.set()

    def take_skip(self) -> bool:
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

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

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


class JobBoard:
    """The jobs running now, by owner, so an Interrupt button stops its own user's job only."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    def interrupt(self, owner: str | None = None) -> int:
        """Interrupt the jobs of `owner` (all jobs when None); returns how many were told."""
        return self._tell(owner, Job.interrupt)

    def skip(self, owner: str | None = None) -> int:
        return self._tell(owner, Job.skip)

    def _tell(self, owner: str | None, action: Callable[[Job], None]) -> int:
        with self._lock:
            jobs = [j for j in self._jobs.values() if owner is None or j.owner == owner]
        for job in jobs:
            action(job)
        return len(jobs)

    def active(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())
