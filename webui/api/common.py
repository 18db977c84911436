"""What every API family shares: who is asking, images in and out, errors as 4xx naming the field."""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from webui.engine.context import Engine
from webui.engine.core import limits
from webui.engine.core.errors import InvalidRequest, KiriError, ModelNotFound
from webui.engine.core.limits import DEFAULT_MAX_PIXELS
from webui.engine.core.infotext import pnginfo_for
from webui.engine.core.owners import Viewer, of_login

MAX_ECHOED_CHARS = 200  # a value quoted back in an error reply is cut to this

log = logging.getLogger(__name__)


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
        """Who is asking, for fair turns, Interrupt and outputs: the login (`user:<login>`, the same
        owner as that login's browser session) if the API has logins, else the client's address."""
        login = self.login(http)
        if login is not None:
            return of_login(login)
        return f"api:{http.client.host if http.client else 'unknown'}"

    def login(self, http: Request) -> str | None:
        """The checked login of this request; None when the API takes no logins."""
        return login_of(http) if self.check_login is not None else None

    def viewer(self, http: Request) -> Viewer:
        """Whose jobs, progress and files this client may see: its own, everyone's for an admin or
        on a server without logins."""
        login = self.login(http)
        return Viewer(self.owner(http), login, login is not None and login in self.admins)

    @property
    def max_pixels(self) -> int:
        """The pixel budget every route decodes pictures and videos with (Settings.max_pixels)."""
        return self.engine.settings.max_pixels

    def stop_scope(self, http: Request) -> str | None:
        """Whose jobs an Interrupt or Skip from this client may touch: its own, or everyone's for an admin."""
        viewer = self.viewer(http)
        return None if viewer.admin else viewer.owner


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


def decode_image(data: str, field: str = "image", *, max_pixels: int | None = DEFAULT_MAX_PIXELS, load: bool = True):
    """A base64 (or data: URL) image, refused with 422 if it is not one or is over the pixel budget.

    Routes pass Settings.max_pixels (`ctx.max_pixels`): the one budget of core/limits.py, checked on
    the header before any pixel is decoded. `load=False` returns the image still lazily opened (its
    mode and pixels untouched): for png-info, which reads only metadata, and for img2img and
    extras, whose engine checks the budget again before decoding (core/images.to_rgb).
    """
    image = limits.open_image(limits.base64_bytes(data, field), field, limit=max_pixels)
    return limits.load_image(image, field) if load else image


def encode_png(image, infotext: str | None = None) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo_for(infotext) if infotext else None)
    return base64.b64encode(buffer.getvalue()).decode()


def json_safe(value: Any, limit: int | None = None) -> Any:
    """`value` with what JSON cannot carry made printable: NaN and +-Infinity as the strings
    "NaN"/"Infinity"/"-Infinity", bytes as text, other objects as their str; strings longer than
    `limit` (when given) cut with a note, so an error reply never quotes a 40 MB prompt back."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        if limit is not None and len(value) > limit:
            return value[:limit] + f"... ({len(value)} characters)"
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(json_safe(k, limit)): json_safe(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if limit is not None and len(items) > limit:
            items = items[:limit]
        return [json_safe(v, limit) for v in items]
    return json_safe(str(value), limit)


class SafeJSONResponse(JSONResponse):
    """JSONResponse that renders whatever a route returns: a lone surrogate (valid in JSON as a
    \\uXXXX escape, not in UTF-8) is written escaped, NaN/Infinity (not JSON) as strings.
    The fast path is Starlette's own; the fallbacks run only for such content."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (ValueError, UnicodeEncodeError, TypeError):
            return json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def invalid(exc: InvalidRequest) -> JSONResponse:
    return SafeJSONResponse({"detail": [{"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}],
                             "error": "InvalidRequest", "errors": str(exc)}, status_code=422)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body that does not fit the schema, made serializable whatever was sent:
    raw JSON NaN/Infinity in a number field made FastAPI's own reply fail as a 500."""
    errors = []
    for error in exc.errors():
        error = dict(error)
        error.pop("url", None)
        if "ctx" in error:
            error["ctx"] = {key: str(value) for key, value in dict(error["ctx"]).items()}
        errors.append(json_safe(error, MAX_ECHOED_CHARS))
    message = "; ".join(f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors)
    return SafeJSONResponse({"detail": errors, "error": "RequestValidationError", "errors": message}, status_code=422)


def server_error(request: Request | None, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its stack, answered as JSON without the stack. Returned (not
    raised on) so the server keeps the client's keep-alive connection open for its next request."""
    log.error("unexpected error in %s", request.url.path if request is not None else "a route", exc_info=exc)
    return SafeJSONResponse({"detail": "Internal server error", "error": type(exc).__name__,
                             "errors": "the server failed on this request; the log has the details"}, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Callable] = {RequestValidationError: validation_error}


class KiriRoute(APIRoute):
    """Engine errors become 4xx with a reason (InvalidRequest a 422 naming the field), per route;
    any other exception a JSON 500 that leaves the connection usable. Responses render with
    SafeJSONResponse unless a route names its own class."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(kwargs.get("response_class", DefaultPlaceholder(JSONResponse)), DefaultPlaceholder):
            kwargs["response_class"] = DefaultPlaceholder(SafeJSONResponse)
        if (isinstance(kwargs.get("response_model", DefaultPlaceholder(None)), DefaultPlaceholder)
                and getattr(endpoint, "__annotations__", {}).get("return") in (dict, "dict")):
            # A bare `-> dict` adds no schema but makes FastAPI serialize through pydantic, which
            # fails (a 500) on a lone surrogate the client sent and the reply echoes back.
            kwargs["response_model"] = None
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def guarded(request: Request):
            try:
                return await handler(request)
            except InvalidRequest as exc:
                return invalid(exc)
            except KiriError as exc:
                code = 404 if isinstance(exc, ModelNotFound) else 400
                return SafeJSONResponse({"detail": str(exc), "error": type(exc).__name__, "errors": str(exc)}, status_code=code)
            except (StarletteHTTPException, RequestValidationError):
                raise  # answered by the app's handlers (401, 404, 422)
            except Exception as exc:  # noqa: BLE001 - see server_error
                return server_error(request, exc)

        return guarded
