"""The fair gate: one holder at a time, round-robin between owners, FIFO within one."""

from __future__ import annotations

import threading
import time

from webui.engine.queue import FairGate


def test_one_at_a_time_and_round_robin_between_owners():
    gate = FairGate()
    order: list[str] = []
    inside = []
    release_first = threading.Event()

    def work(owner: str, label: str, hold: threading.Event | None = None):
        with gate.turn(owner):
            inside.append(label)
            assert len(inside) == 1, "two holders at once"
            order.append(label)
            if hold is not None:
                hold.wait(10)
            inside.remove(label)

    first = threading.Thread(target=work, args=("bulk", "bulk-0", release_first))
    first.start()
    while not order:
        time.sleep(0.01)
    threads = []
    # The bulk client queues five more batches before the other client asks for one.
    for i in range(1, 6):
        threads.append(threading.Thread(target=work, args=("bulk", f"bulk-{i}")))
        threads[-1].start()
        while gate.waiting() < i:
            time.sleep(0.01)
    threads.append(threading.Thread(target=work, args=("single", "single-0")))
    threads[-1].start()
    while gate.waiting() < 6:
        time.sleep(0.01)
    release_first.set()
    for t in [first, *threads]:
        t.join(10)
    # The single image is served right after the batch that was running, not after all five.
    assert order[:2] == ["bulk-0", "single-0"]
    assert order[2:] == [f"bulk-{i}" for i in range(1, 6)]


def test_engine_serves_another_user_between_batches(engine):
    from webui.engine.jobs import Job
    from webui.engine.requests import Txt2ImgRequest

    engine.load_model("tiny-sd")
    bulk, single = Job(owner="bulk"), Job(owner="single")
    started = threading.Event()
    bulk.listeners.append(lambda j: started.set())
    worker = threading.Thread(target=engine.txt2img, args=(Txt2ImgRequest("a circle", steps=3, n_iter=4, width=64, height=64), bulk))
    worker.start()
    assert started.wait(60)
    engine.txt2img(Txt2ImgRequest("a square", steps=3, width=64, height=64), single)
    done_when_single_finished = bulk.images_done
    worker.join(120)
    assert single.images_done == 1 and bulk.images_done == 4
    assert done_when_single_finished < 3  # served after at most the batch that was running (and the next queued)
