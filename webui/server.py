"""Serving: the Gradio app with Kiri's API routes and body cap in place before the port opens.

launch.py and the tests both come through `serve()`, so what the tests exercise is what users run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from webui.api import ApiContext, server_app_kwargs
from webui.engine.context import Engine


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    ui_login: Callable[[str, str], bool] | None = None
    api_login: Callable[[str, str], bool] | None = None
    admins: set[str] = field(default_factory=set)
    max_upload_mb: int = 50
    settings_file: Path = Path("settings.json")
    cmd_flags: dict[str, Any] = field(default_factory=dict)
    quiet: bool = True


def serve(engine: Engine, options: ServeOptions):
    """Build the UI and start serving without blocking; returns (blocks, server_app)."""
    from webui.ui.app import CSS, HEAD, build

    from webui.engine.library import open_library

    open_library(engine.settings).admins = set(options.admins)  # the Library tab's --admin logins see all
    app = build(engine, options.settings_file)
    # Model work is queued by the engine's job store; Gradio only bounds its waiting handlers.
    app.queue(default_concurrency_limit=None)
    ctx = ApiContext(engine, options.cmd_flags, options.api_login, set(options.admins),
                     exposed=options.share or options.host != "127.0.0.1")
    server_app, _, _ = app.launch(
        share=options.share, server_name=options.host, server_port=options.port, auth=options.ui_login, css=CSS, head=HEAD,
        max_file_size=f"{options.max_upload_mb}mb", allowed_paths=[str(Path(engine.settings.outputs_dir).resolve())],
        prevent_thread_lock=True, quiet=options.quiet, footer_links=[],
        app_kwargs=server_app_kwargs(ctx, options.max_upload_mb * 2**20, ui_logins=options.ui_login is not None),
    )
    return app, server_app
