"""What every API family shares: who is asking, images in and out, errors as 4xx naming the field."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from webui.engine.context import Engine
from webui.engine.core.errors import InvalidRequest, KiriError, ModelNotFound
from webui.engine.core.infotext import pnginfo_for

MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # a decoded upload larger than this is refused (decompression bombs)


@dataclass
class ApiContext:
    """What the routers need: the engine and the server's options; passed in, never global."""

    engine: Engine
    cmd_flags: dict[str, Any] = field(default_factory=dict)
    check_login: Callable[[str, str], bool] | None = None
    admins: set[str] = field(default_factory=set)  # logins whose Interrupt/Skip act on every user's job
    exposed: bool = False  # --listen/--share: show paths relative to the models/outputs folders

    def dependencies(self) -> list:
        return [Depends(basic_auth(self.check_login))] if self.check_login else []

    def owner(self, http: Request) -> str:
        """Who is asking, for fair turns and Interrupt: the login if any, else the client's address."""
        login = login_of(http)
        if login is not None:
            return "api:" + login
        return f"api:{http.client.host if http.client else 'unknown'}"

    def stop_scope(self, http: Request) -> str | None:
        """Whose jobs an Interrupt or Skip from this client may touch: its own, or everyone's for an admin."""
        login = login_of(http)
        return None if login is not None and login in self.admins else self.owner(http)


def login_of(http: Request) -> str | None:
    auth = http.headers.get("authorization", "")
    if auth.startswith("Basic "):
        try:
            return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
    return None


def basic_auth(check_login: Callable[[str, str], bool]) -> Callable[..., None]:
    """HTTP Basic on every route."""
    security = HTTPBasic()

    def check(given: HTTPBasicCredentials = Depends(security)) -> None:
        if not check_login(given.username, given.password):
            raise HTTPException(status_code=401, detail="wrong user or password", headers={"WWW-Authenticate": "Basic"})

    return check


def decode_image(data: str, field: str = "image"):
    """A base64 (or data: URL) image, refused with 422 if it is not one or is too large."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, str):
        raise InvalidRequest(field, f"{field} must be a base64 string")
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(field, f"{field} is not valid base64") from exc
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise InvalidRequest(field, f"{field} is {image.width}x{image.height}, more pixels than Kiri accepts")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        raise InvalidRequest(field, f"{field} is not an image Kiri can read") from exc
    return image


def encode_png(image, infotext: str | None = None) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(infotext) if infotext else None)
    return base64.b64encode(buffer.getvalue()).decode()


def invalid(exc: InvalidRequest) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}],
                         "error": "InvalidRequest", "errors": str(exc)}, status_code=422)


class KiriRoute(APIRoute):
    """Engine errors become 4xx with a reason (InvalidRequest a 422 naming the field), per route."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except InvalidRequest as exc:
                return invalid(exc)
            except KiriError as exc:
                code = 404 if isinstance(exc, ModelNotFound) else 400
                return JSONResponse({"detail": str(exc), "error": type(exc).__name__, "errors": str(exc)}, status_code=code)

        return guarded
