"""Output files go only to the login that made them: a guard in front of Gradio's file route.

Gradio serves `/gradio_api/file=<path>` to any logged-in browser for any file under its allowed
paths, and it does not know who made a file. With logins, Kiri writes each login's outputs to
`outputs/<login>/` (engine/core/owners.py), and this ASGI middleware answers 403 when a login asks
for a file in another login's folder (an `--admin` login may fetch any). Without logins it only
passes requests on: one local user, as before. Paths outside the outputs folder are Gradio's to
refuse or serve (its upload and cache folders), as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from starlette.requests import HTTPConnection

from webui.engine.core.owners import Viewer, of_login, output_login

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")


def gradio_login(scope: Scope) -> str | None:
    """The login of a Gradio browser session: its access-token cookie, looked up in the app's tokens."""
    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    if not isinstance(tokens, dict) or cookie_id is None:
        return None
    cookies = HTTPConnection(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    login = tokens.get(token) if token else None
    return login if isinstance(login, str) and login else None


def requested_path(scope: Scope) -> str | None:
    """The file path a request to Gradio's file route names, made absolute as Gradio makes it."""
    path = scope.get("path", "")
    for prefix in FILE_ROUTES:
        if path.startswith(prefix):
            named = unquote(path[len(prefix):])
            return os.path.abspath(named) if named else None
    return None


class OutputFiles:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], outputs_dir: Path | str,
                 logins: bool, admins: set[str] | frozenset[str] = frozenset()):
        self.app, self.outputs_dir, self.logins, self.admins = app, Path(outputs_dir), logins, frozenset(admins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.logins and scope["type"] == "http":
            path = requested_path(scope)
            if path is not None and not self.allowed(scope, path):
                await _refuse(send)
                return
        await self.app(scope, receive, send)

    def allowed(self, scope: Scope, path: str) -> bool:
        login = gradio_login(scope)
        if login is None:  # not logged in: Gradio answers 401; nothing of the outputs either way
            return not output_login(self.outputs_dir, path)[0]
        return Viewer(of_login(login), login, login in self.admins).may_fetch(self.outputs_dir, path)


async def _refuse(send: Send) -> None:
    body = json.dumps({"detail": "this file belongs to another login", "error": "Forbidden"}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
