"""Kiri on Ray Serve replicas: throughput with 1 and 2 replicas on the same work, and the latency a job
gains by going through Ray instead of running in the single process.

Run: python bench/scale.py [--jobs 16] [--clients 4] [--steps 20] [--size 256]
(pip install -r requirements-ray.txt first.) In one run, on the default model of models/:

1. the single process (this one, torch on one thread): each job alone, back to back (median latency);
2. a local Ray cluster, one replica (one torch thread): each job alone (median latency: the difference
   with 1. is what Ray adds per job), then `--jobs` jobs from `--clients` client threads (jobs/s);
3. the same with two replicas (jobs/s), and the ratio to 2. (issue 31's target: at least 1.7x; on
   this 2-core machine the 2 cores are the 2 "GPUs", so the front, Ray and both replicas share them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--alone", type=int, default=8, help="jobs run one at a time for the latency")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="width and height (0: the model's default size)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from webui.bootstrap import build_engine
    from webui.engine.core.devices import DeviceChoice
    from webui.engine.core.jobs import Job
    from webui.engine.generation.requests import Txt2ImgRequest
    from webui.engine.settings import Settings
    import webui.serve_ray as serve_ray

    def request(seed: int) -> Txt2ImgRequest:
        size = {"width": args.size, "height": args.size} if args.size else {}
        return Txt2ImgRequest(prompt="a red circle on a blue square", steps=args.steps, seed=seed, save_images=False,
                              **size)

    def engine(out: str):
        built = build_engine(Settings(models_dir=args.models_dir, outputs_dir=Path(out)), DeviceChoice("cpu"))
        built.catalog.scan()
        return built

    def alone(front) -> float:
        for seed in range(3):  # warm: the model loaded (on a replica: routed there too), torch's kernels chosen
            front.txt2img(request(seed))
        times = []
        for seed in range(10, 10 + args.alone):
            start = time.perf_counter()
            front.txt2img(request(seed))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def busy() -> tuple[float, float]:
        """(busy, total) CPU ticks of the whole machine since boot (/proc/stat)."""
        with open("/proc/stat") as stat:
            ticks = [float(v) for v in stat.readline().split()[1:]]
        idle = ticks[3] + ticks[4]
        return sum(ticks) - idle, sum(ticks)

    def throughput(front) -> float:
        seeds = iter(range(1000, 1000 + args.jobs))
        lock = threading.Lock()

        def client(owner: str) -> None:
            while True:
                with lock:
                    seed = next(seeds, None)
                if seed is None:
                    return
                front.txt2img(request(seed), Job(kind="txt2img", owner=owner))

        threads = [threading.Thread(target=client, args=(f"client{c}",)) for c in range(args.clients)]
        before, start = busy(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds, after = time.perf_counter() - start, busy()
        load = (after[0] - before[0]) / max(after[1] - before[1], 1)
        print(f"  {args.jobs} jobs in {seconds:.2f} s; machine CPU busy {load:.0%} (all processes, this one included)",
              file=sys.stderr)
        return args.jobs / seconds

    results = {}
    with tempfile.TemporaryDirectory() as out:
        local = engine(out)
        results["single_process_latency_s"] = alone(local)
        results["single_process_jobs_per_s"] = throughput(local)
        local.models.unload()
        for replicas in (1, 2):
            front = engine(out)
            serve_ray.start(front, serve_ray.RayOptions(replicas=replicas, num_cpus=0.5, threads=1, cluster_cpus=2,
                                                        device="cpu", log_to_driver=False))
            if replicas == 1:
                results["ray_1_latency_s"] = alone(front)
            else:
                throughput(front)  # both replicas warm (the model loaded on each)
            done_before = len(front.dispatcher.ran_on)
            results[f"ray_{replicas}_jobs_per_s"] = throughput(front)
            per_replica: dict[str, int] = {}
            for where in list(front.dispatcher.ran_on.values())[done_before:]:
                per_replica[where["replica"]] = per_replica.get(where["replica"], 0) + 1
            print(f"  {replicas} replica(s): jobs per replica {sorted(per_replica.values())}", file=sys.stderr)
            serve_ray.stop()  # a fresh cluster for the next count: no replica keeps state from this one
    results["added_latency_ms"] = 1000 * (results["ray_1_latency_s"] - results["single_process_latency_s"])
    results["ratio_2_to_1"] = results["ray_2_jobs_per_s"] / results["ray_1_jobs_per_s"]
    print(json.dumps({k: round(v, 4) for k, v in results.items()}, indent=2))
    print(f"2 replicas / 1 replica: {results['ratio_2_to_1']:.2f}x (target >= 1.7x); "
          f"added latency per job: {results['added_latency_ms']:.0f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
