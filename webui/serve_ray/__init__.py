"""Kiri's queue on Ray Serve replicas (optional: `pip install -r requirements-ray.txt`).

    python launch.py --ray --replicas 2            # a local Ray cluster, two replicas
    python launch.py --ray-address HOST:6379       # join a running cluster

`start(engine, ...)` connects to Ray, deploys KiriEngine (replica.py: each replica its own Engine, built
as the single process builds it) and installs a RayDispatcher (front.py) as `engine.dispatcher`, so every
registered job kind the UI and the APIs ask for runs on a replica while the front keeps its fair queue.
Nothing in webui/engine imports this package. See docs/scale-out.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
APP_NAME = "kiri"
DEPLOYMENT = "KiriEngine"
_PATH_SETTINGS = ("models_dir", "outputs_dir", "extensions_dir")


@dataclass
class RayOptions:
    replicas: int = 1
    address: str | None = None  # None: start a local cluster
    num_cpus: float = 1  # per replica
    num_gpus: float | None = 0  # per replica; None: 1 when the cluster has GPUs (one replica per GPU), else 0
    threads: int = 0  # torch threads per replica (0: torch's default)
    device: str | None = None  # the replicas' device (None: the settings' device)
    cluster_cpus: int | None = None  # a local cluster's CPUs (None: Ray counts them)
    retries: int = 3
    # autoscaling: between `replicas` and this many, from the requests waiting (None: a fixed `replicas`)
    max_replicas: int | None = None
    upscale_delay_s: float = 5.0  # how long the queue must stay long before a replica is added
    downscale_delay_s: float = 120.0  # how long replicas must stay idle before one is removed
    health_check_period_s: float = 15.0
    health_check_timeout_s: float = 300.0
    log_to_driver: bool = True  # the replicas' logs in this process's output
    settings: dict = field(default_factory=dict)  # more Settings fields for the replicas


def replica_settings(settings: Any, extra: dict | None = None) -> dict:
    """The front's Settings as the plain fields a replica builds its Engine from."""
    import dataclasses

    fields = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        if f.init:
            fields[f.name] = value
    return {**fields, **(extra or {})}


def start(engine: Any, options: RayOptions) -> Any:
    """Connect to Ray, deploy the replicas, install the dispatcher on `engine`; the dispatcher."""
    import ray
    from ray import serve

    from webui.serve_ray.front import RayDispatcher
    from webui.serve_ray.replica import CONTROL, NAMESPACE, Control, make_deployment

    if not ray.is_initialized():
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if options.threads:
            env["OMP_NUM_THREADS"] = str(options.threads)
        ray.init(address=options.address, num_cpus=options.cluster_cpus if options.address is None else None,
                 namespace=NAMESPACE, include_dashboard=False, runtime_env={"env_vars": env},
                 logging_level=logging.WARNING, log_to_driver=options.log_to_driver)
    control = Control.options(name=CONTROL, namespace=NAMESPACE, get_if_exists=True, lifetime="detached").remote()
    replicas = _deployed_replicas() if options.address else None
    if replicas:  # the cluster runs KiriEngine already (a RayService, `serve deploy`): send the jobs there
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP_NAME)
        log.info("joined the %s application on the Ray cluster: %d replica(s)", APP_NAME, replicas)
    else:
        serve.start(proxy_location="Disabled")  # the front is Kiri's own server: Serve needs no HTTP proxy
        settings = replica_settings(engine.settings, options.settings)
        deployment = make_deployment(
            models_per_replica=engine.settings.model_cache_size, max_ongoing_requests=1,
            ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": _gpus(options.num_gpus)},
            # a replica busy with a long step on a crowded machine answers health checks late: give it
            # minutes, not Serve's 30 s, before it is counted dead and restarted (a job on it sent again)
            health_check_period_s=options.health_check_period_s, health_check_timeout_s=options.health_check_timeout_s,
            **scaling(options),
        )
        device = options.device or (engine.settings.device if engine.settings.device != "auto" else None)
        handle = serve.run(deployment.bind(settings, device, options.threads), name=APP_NAME, route_prefix=None)
        replicas = max(options.replicas, options.max_replicas or 0)
    dispatcher = RayDispatcher(handle, control, replicas, options.retries)
    dispatcher.install(engine)
    dispatcher.watch(engine)
    if options.max_replicas and options.max_replicas > options.replicas:
        log.info("Kiri runs its jobs on %d to %d Ray Serve replicas (autoscaling)", options.replicas, options.max_replicas)
    else:
        log.info("Kiri runs its jobs on %d Ray Serve replica(s)", replicas)
    return dispatcher


def scaling(options: RayOptions) -> dict:
    """The deployment's replica count: fixed (`num_replicas`), or with `max_replicas` above `replicas`, Serve's
    autoscaling from the requests each replica has (one at a time: max_ongoing_requests 1, target 1), so
    jobs waiting at the front add replicas up to the maximum and idle ones go back down to the minimum.
    The front then keeps `max_replicas` turn-taking threads, so as many turns as the most replicas can
    take are out at once (those over the running replicas wait in Serve's queue, which is what scales it)."""
    if not options.max_replicas or options.max_replicas <= options.replicas:
        return {"num_replicas": options.replicas}
    return {"autoscaling_config": {
        "min_replicas": options.replicas, "max_replicas": options.max_replicas, "initial_replicas": options.replicas,
        "target_ongoing_requests": 1, "upscale_delay_s": options.upscale_delay_s,
        "downscale_delay_s": options.downscale_delay_s, "metrics_interval_s": 1.0, "look_back_period_s": 5.0}}


def running_replicas() -> int:
    """The KiriEngine replicas running now (0 when the application is not there)."""
    return _deployed_replicas() or 0


def _gpus(asked: float | None) -> float:
    import ray

    if asked is not None:
        return asked
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _deployed_replicas() -> int | None:
    """The running replicas of KiriEngine when the cluster already has the application, else None."""
    from ray import serve

    try:
        app = serve.status().applications.get(APP_NAME)
    except Exception:  # noqa: BLE001 - no Serve on the cluster yet
        return None
    deployment = app.deployments.get(DEPLOYMENT) if app is not None else None
    if deployment is None:
        return None
    return sum(count for state, count in deployment.replica_states.items() if str(state).endswith("RUNNING")) or None


def stop() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
