"""The seam webui/serve_ray plugs into, without Ray: `engine.dispatcher` runs a kind's jobs elsewhere and
`jobs.workers` threads take the fair turns, one per replica; with neither set, nothing changes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from webui.engine.context import Engine
from webui.engine.core.job_kinds import JobKind
from webui.engine.core.jobs import Job, JobStore
from webui.engine.registries import Registries
from webui.engine.settings import Settings


@dataclass
class Echo:
    text: str = ""

    def validate(self) -> None:
        pass


@dataclass
class Echoed:
    text: str = ""
    where: list = field(default_factory=list)


def local_echo(engine, request):
    def work(job):
        return Echoed(request.text, ["here"])
        yield

    return work


class FakeReplicas:
    """A dispatcher whose 'replicas' are sleeps: records when each job ran and on which thread."""

    def __init__(self, replicas: int, seconds: float) -> None:
        self.replicas, self.seconds = replicas, seconds
        self.spans: list[tuple[str, float, float]] = []

    def work_for(self, engine, kind, request):
        if kind != "echo":
            return None

        def work(job):
            start = time.monotonic()
            time.sleep(self.seconds)
            self.spans.append((job.owner, start, time.monotonic()))
            return Echoed(request.text, ["replica"])
            yield

        return request, work


def make_engine(tmp_path, dispatcher=None) -> Engine:
    registries = Registries()
    registries.add_job_kind(JobKind("echo", Echo, local_echo, result_type=Echoed))
    engine = Engine(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs"), registries)
    if dispatcher is not None:
        engine.dispatcher = dispatcher
        engine.jobs.workers = dispatcher.replicas
    return engine


def test_without_a_dispatcher_a_kind_runs_here_on_one_worker(tmp_path):
    engine = make_engine(tmp_path)
    assert engine.run_kind("echo", Echo("hi")).where == ["here"]
    assert engine.jobs.workers == 1 and len(engine.jobs._threads) == 1


def test_a_dispatcher_takes_its_kinds_and_two_workers_overlap_two_jobs(tmp_path):
    replicas = FakeReplicas(2, 0.3)
    engine = make_engine(tmp_path, replicas)
    jobs = [engine.submit(engine._work_for("echo", Echo(str(i)))[1], Job(kind="echo", owner=f"u{i}")) for i in range(4)]
    results = [engine.jobs.wait(job, timeout=10) for job in jobs]
    assert [r.where for r in results] == [["replica"]] * 4
    spans = sorted(replicas.spans, key=lambda s: s[1])
    assert spans[1][1] < spans[0][2]  # the second job started before the first ended: two replicas busy


def test_the_next_free_worker_serves_the_owner_served_least_recently(tmp_path):
    replicas = FakeReplicas(2, 0.2)
    engine = make_engine(tmp_path, replicas)
    work = engine._work_for("echo", Echo("x"))[1]
    gate = threading.Event()

    def held(job):  # keeps the first worker busy until the queue is filled
        gate.wait(5)
        return Echoed("held")
        yield

    first = engine.submit(held, Job(kind="hold", owner="a"))
    many = [engine.submit(work, Job(kind="echo", owner="a")) for _ in range(3)]
    late = engine.submit(work, Job(kind="echo", owner="b"))
    gate.set()
    for job in [first, *many, late]:
        engine.jobs.wait(job, timeout=10)
    order = [owner for owner, _, _ in sorted(replicas.spans, key=lambda s: s[1])]
    assert order.index("b") <= 1  # b's one job went out among the first two, not after all of a's


def test_a_single_worker_store_is_unchanged_by_the_seam():
    store = JobStore()
    seen = []
    queued = threading.Event()  # the first turn waits until all three jobs are in the store: on a loaded
    # machine the worker could otherwise finish a's jobs before b's was submitted

    def work(name):
        def run(job):
            queued.wait(5)
            seen.append(name)
            yield
            seen.append(name)
        return run

    jobs = [store.submit(Job(kind="t", owner=o, work=work(o))) for o in ("a", "a", "b")]
    queued.set()
    for job in jobs:
        store.wait(job, timeout=5)
    assert store.workers == 1 and len(store._threads) == 1
    assert seen[:4] in (["a", "b", "a", "b"], ["a", "a", "b", "a"])  # turns alternate owners between yields
