"""Who a job and its files belong to, and who may see them.

A job's owner is a plain string. A login (from `--auth`, in the browser or over the API) is
`user:<login>`, the same string from the UI and the API, so a person sees and stops their own work
whichever way they came in. Without logins the owner is the browser session or the API client's
address, and every client is the one local user: nothing is hidden between them, as before.

With logins, outputs go to `outputs/<login>/...` (`outputs_root`), and a viewer sees a job or an
output file only if it is theirs, unless the viewer is an `--admin` login (`Viewer`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

LOGIN = "user:"
_SAFE_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

__all__ = ["LOGIN", "Viewer", "of_login", "login_of", "login_folder", "outputs_root", "output_login"]


def of_login(login: str) -> str:
    """The owner string of a login: the same from the browser and from the API."""
    return LOGIN + login


def login_of(owner: str | None) -> str | None:
    """The login an owner string names, or None for a session, a client address or Kiri itself."""
    if isinstance(owner, str) and owner.startswith(LOGIN) and len(owner) > len(LOGIN):
        return owner[len(LOGIN):]
    return None


def login_folder(login: str) -> str:
    """A folder name for a login's outputs: the login itself when it is a plain name, else a
    slug with a hash, so `../x`, `a/b` or `CON` never name a path outside its own folder."""
    if _SAFE_FOLDER.match(login) and not login.endswith("."):
        return login
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", login).strip("_")[:40] or "login"
    return f"{slug}-{hashlib.sha256(login.encode()).hexdigest()[:10]}"


def outputs_root(outputs_dir: Path | str, owner: str | None) -> Path:
    """Where `owner`'s outputs go: `outputs/<login>` for a login, `outputs` otherwise."""
    login = login_of(owner)
    return Path(outputs_dir) / login_folder(login) if login is not None else Path(outputs_dir)


def output_login(outputs_dir: Path | str, path: Path | str) -> tuple[bool, str | None]:
    """(inside, folder): whether `path` (resolved, links followed) lies in the outputs folder, and
    the first folder below it, which names the login that made it when logins are on."""
    root = Path(outputs_dir).resolve()
    try:
        relative = Path(path).resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return False, None
    parts = relative.parts
    return True, (parts[0] if len(parts) > 1 else None)


@dataclass(frozen=True)
class Viewer:
    """Who asks to see or stop something. `login` None: the server has no logins (one local user,
    who sees everything); `admin`: an `--admin` login, who sees and stops everyone's work."""

    owner: str
    login: str | None = None
    admin: bool = False

    @property
    def sees_all(self) -> bool:
        return self.login is None or self.admin

    def may_see(self, owner: str | None) -> bool:
        """A job of `owner`: visible to that login, the admin, and everyone on a server without logins."""
        return self.sees_all or login_of(owner) == self.login

    def may_fetch(self, outputs_dir: Path | str, path: Path | str) -> bool:
        """An output file: in the viewer's own outputs folder (or any, for the admin or without logins).
        Paths outside the outputs folder are not this check's business (True)."""
        if self.sees_all:
            return True
        inside, folder = output_login(outputs_dir, path)
        return not inside or folder == login_folder(self.login)
