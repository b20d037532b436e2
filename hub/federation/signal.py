"""Wakes the long polls held open in this hub process when a task is created.

Other hub processes (several workers behind PostgreSQL) do not share it: a held poll also
looks at the database again every ``poll_recheck_seconds``, so a task reaches its node
within that time wherever it was created.
"""

from __future__ import annotations

import asyncio
import contextlib


class TaskSignal:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def current(self) -> asyncio.Event:
        """Take this before looking for tasks, then wait on it: no wake-up is missed."""
        return self._event

    def notify(self) -> None:
        """Wake every waiting poll; callable from any thread."""
        if self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._swap)

    def _swap(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
