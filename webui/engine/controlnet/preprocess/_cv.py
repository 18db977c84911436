"""OpenCV, imported when a preprocessor first runs, not when the registry is listed: the UI builds its
panels from the registry before the page is served, and Kiri keeps heavy libraries out of that
(tests/test_startup_imports.py)."""

from __future__ import annotations

from typing import Any


class _OpenCV:
    def __getattr__(self, name: str) -> Any:
        import cv2

        return getattr(cv2, name)


cv2 = _OpenCV()
