"""One fair turn at a time on the model, shared by the UI and the API.

Work runs in the caller's thread (so Gradio progress and HTTP responses stay simple), but only
while it holds the turn. Turns go round-robin between owners (a browser session, an API client)
and first-come-first-served within one owner; a job takes one turn per batch, so one client's
50-image request does not starve another's single image.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from contextlib import contextmanager
from typing import Iterator


class FairGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: OrderedDict[str, deque[int]] = OrderedDict()  # owner -> tickets, owners in arrival order
        self._last_turn: dict[str, int] = {}
        self._tickets = itertools.count()
        self._turns = itertools.count()
        self._holder: int | None = None

    @contextmanager
    def turn(self, owner: str) -> Iterator[None]:
        ticket = next(self._tickets)
        with self._cond:
            self._waiting.setdefault(owner, deque()).append(ticket)
            while self._holder is not None or self._next_ticket() != ticket:
                self._cond.wait()
            queue = self._waiting[owner]
            queue.popleft()
            if not queue:
                del self._waiting[owner]
            self._holder = ticket
            self._last_turn[owner] = next(self._turns)
        try:
            yield
        finally:
            with self._cond:
                self._holder = None
                self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._waiting.values())

    def _next_ticket(self) -> int | None:
        """The first ticket of the owner served least recently (never served counts as first)."""
        if not self._waiting:
            return None
        owner = min(self._waiting, key=lambda o: self._last_turn.get(o, -1))
        return self._waiting[owner][0]
