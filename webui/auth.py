"""Logins: `--auth user:pass` and `--auth-file` with salted PBKDF2 hashes, never plain passwords on disk.

Make a line for the file with `python -m webui.auth USER` (it asks for the password).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Callable

ITERATIONS = 200_000
SCHEME = "pbkdf2_sha256"


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def read_auth_file(path: Path) -> dict[str, str]:
    """`user:hash` per line; blank lines and # comments skipped. A plain password is refused."""
    users: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not stored.startswith(SCHEME + "$"):
            raise ValueError(f"{path}:{number}: expected user:{SCHEME}$..., made by `python -m webui.auth USER`")
        users[user] = stored
    return users


def make_checker(pairs: list[tuple[str, str]], hashed: dict[str, str]) -> Callable[[str, str], bool]:
    """One check for plain --auth pairs and hashed --auth-file users, in constant time per comparison."""

    def check(user: str, password: str) -> bool:
        ok = False
        for known_user, known_password in pairs:
            if hmac.compare_digest(user.encode(), known_user.encode()) and hmac.compare_digest(
                password.encode(), known_password.encode()
            ):
                ok = True
        if user in hashed and verify_password(password, hashed[user]):
            ok = True
        return ok

    return check


if __name__ == "__main__":
    import getpass

    if len(sys.argv) != 2:
        sys.exit("usage: python -m webui.auth USER   (prints a line for --auth-file)")
    print(f"{sys.argv[1]}:{hash_password(getpass.getpass('password: '))}")
