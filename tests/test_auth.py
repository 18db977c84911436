"""Hashed logins for --auth-file."""

from __future__ import annotations

import pytest

from webui.auth import hash_password, make_checker, read_auth_file, verify_password


def test_hash_and_verify():
    stored = hash_password("correct horse", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong", stored)
    assert hash_password("x", iterations=1000) != hash_password("x", iterations=1000)  # salted


def test_auth_file_and_checker(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"# logins\nann:{hash_password('a-pass', iterations=1000)}\n\n")
    users = read_auth_file(path)
    check = make_checker([("bob", "b-pass")], users)
    assert check("ann", "a-pass") and check("bob", "b-pass")
    assert not check("ann", "b-pass") and not check("eve", "a-pass")
    path.write_text("carl:plaintext\n")
    with pytest.raises(ValueError, match="python -m webui.auth"):
        read_auth_file(path)
