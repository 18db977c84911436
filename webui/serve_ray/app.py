"""The KiriEngine application for a Serve config (KubeRay's RayService `serveConfigV2`, `serve deploy`):

    applications:
      - name: kiri
        import_path: webui.serve_ray.app:build
        args: {models_dir: /models, outputs_dir: /outputs, device: cuda, threads: 0, models_per_replica: 1}
        deployments:
          - name: KiriEngine
            num_replicas: 2
            max_ongoing_requests: 1
            ray_actor_options: {num_gpus: 1}

A front started with `--ray-address` finds the application running and sends its jobs there instead of
deploying its own (webui/serve_ray/__init__.py: start). Every `args` key other than device, threads and
models_per_replica is a Settings field.
"""

from __future__ import annotations

from typing import Any

from webui.serve_ray.replica import make_deployment


def build(args: dict[str, Any]):
    """The application (Serve's builder for `import_path`) from the config's `args`."""
    settings = dict(args)
    device = settings.pop("device", None)
    threads = int(settings.pop("threads", 0))
    models_per_replica = int(settings.pop("models_per_replica", settings.get("model_cache_size", 1)))
    return make_deployment(models_per_replica, max_ongoing_requests=1).bind(settings, device, threads)
