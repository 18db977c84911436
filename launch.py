"""Start Kiri: `python launch.py` serves the UI at http://127.0.0.1:7860."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

STARTED = time.perf_counter()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a local tool

log = logging.getLogger("kiri")

LOUD = "\n" + "!" * 78 + "\n{}\n" + "!" * 78 + "\n"


def main(argv: list[str] | None = None) -> None:
    from webui.cli import build_parser

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from webui.bootstrap import build_engine
    from webui.engine.settings import Settings

    exposed = args.listen or args.share
    settings = Settings(models_dir=args.models_dir, outputs_dir=args.outputs_dir, device=args.device,
                        library_dirs=list(args.library_dir), memory_mode=args.memory_mode,
                        memory_limit_mb=args.memory_limit_mb, fast_path=not args.no_fast_path,
                        compile_blocks=args.compile, fp8_weights=args.fp8_weights, attention_backend=args.attention,
                        allow_pickle=args.allow_pickle, extensions_dir=args.extensions_dir,
                        allow_extension_install=not exposed or args.enable_insecure_extension_access)
    settings.load_saved(args.settings_file)
    engine = build_engine(settings)
    entries = engine.catalog.scan()
    if not entries:
        log.warning("no checkpoint in %s: the UI starts, and says how to add one", engine.catalog.checkpoints_dir)

    for ext in engine.extensions.extensions:
        if ext.status == "error":
            log.error("extension %s did not load: %s", ext.name, ext.error)
    from webui.auth import make_checker, read_auth_file

    hashed = read_auth_file(args.auth_file) if args.auth_file else {}
    ui_login = make_checker(args.auth, hashed) if (args.auth or hashed) else None
    # The API takes --api-auth; failing that the UI's logins, so a UI login never leaves the API open.
    api_login = make_checker(args.api_auth, {}) if args.api_auth else ui_login
    if exposed and ui_login is None:
        print(LOUD.format(
            "WARNING: Kiri is reachable from other machines (--listen/--share) with no login.\n"
            "Anyone who finds the address can use your GPU and read your outputs. Add --auth user:pass."
        ), file=sys.stderr)

    if args.ray or args.ray_address:
        start_ray(engine, args)

    from webui.server import ServeOptions, serve

    server = "0.0.0.0" if args.listen else "127.0.0.1"
    app, _ = serve(engine, ServeOptions(
        host=server, port=args.port, share=args.share, ui_login=ui_login, api_login=api_login, admins=set(args.admin),
        max_upload_mb=args.max_upload_mb, settings_file=args.settings_file, cmd_flags=vars(args)))
    log.info("Kiri is serving at http://%s:%d (ready in %.1f s)", "127.0.0.1" if server == "127.0.0.1" else server,
             args.port, time.perf_counter() - STARTED)
    # Load the model only once the page is served: on two cores, importing torch and diffusers beside
    # the UI build doubled the time to the first page.
    if entries and not args.no_preload and engine.dispatcher is None:  # on Ray, the replicas load their models
        threading.Thread(target=engine.preload, name="kiri-preload", daemon=True).start()
    engine.hooks.notify("on_app_started", app, engine)
    if args.share:
        if app.share_url:
            print(f"Public share link: {app.share_url}")
        else:  # Gradio could not reach its share server: offline, or blocked
            print(LOUD.format("Could not open a share link (is this machine offline?). Kiri keeps serving locally."),
                  file=sys.stderr)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass


def start_ray(engine, args) -> None:
    """Hand the engine's jobs to Ray Serve replicas (webui/serve_ray); Ray is an optional install."""
    try:
        import webui.serve_ray as serve_ray
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("--ray needs Ray Serve: pip install -r requirements-ray.txt") from None
    if args.replicas < 1:
        raise SystemExit("--replicas must be 1 or more")
    if args.max_replicas is not None and args.max_replicas < args.replicas:
        raise SystemExit("--max-replicas must be at least --replicas (the autoscaling's minimum)")
    serve_ray.start(engine, serve_ray.RayOptions(
        replicas=args.replicas, max_replicas=args.max_replicas, address=args.ray_address, num_cpus=args.replica_cpus,
        num_gpus=args.replica_gpus if args.replica_gpus is not None else (None if args.device in ("cuda", "auto") else 0),
        threads=args.replica_threads, device=None if args.device == "auto" else args.device))


if __name__ == "__main__":
    main()
