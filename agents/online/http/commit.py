"""Group commit: the writes that concurrent requests make on the event loop share one store transaction.

Each request is still acknowledged only after its own writes are committed; concurrent requests share the
commit's cost (one store commit per event-loop turn instead of one per request). A request that fails has its
own writes discarded (the store's per-request savepoint), whatever the error and wherever it was raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from agents.online.router import OnlineRouter

log = logging.getLogger("routing_env.serve")

_T = TypeVar("_T")


class StoreCommitError(RuntimeError):
    """The decision store could not commit a group of writes; they were rolled back (HTTP 503)."""


class GroupCommit:
    """Group commit of the writes that concurrent requests make on the event loop.

    A request runs its router call inside :meth:`run`: its writes join one open store transaction, and it waits
    for the commit, which runs once per loop iteration for every request that wrote meanwhile. Each request is
    still acknowledged only after its writes are committed; concurrent requests share the commit's cost. If the
    call raises, its writes are discarded before the error is answered; if a commit fails, its requests get
    :class:`StoreCommitError` and the router is resynchronised with the store (the rolled-back decisions and
    updates are undone in memory too).
    """

    def __init__(self, router: OnlineRouter) -> None:
        self.router = router
        self.store = router.store
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False
        #: Why the last commit failed (cleared by the next one that succeeds), for ``/healthz``.
        self.last_error: str | None = None
        self._resync_due = False

    async def run(self, work: Callable[[], _T]) -> _T:
        store = self.store
        if self._resync_due:  # the router still holds updates of a rolled-back group: catch up first
            self._resync()
        store.begin_deferred()
        try:
            result = work()
        except BaseException:
            store.end_deferred(discard=True)
            raise
        group = store.end_deferred()
        if group is not None:
            error = store.group_error(group)
            if error is not None:  # committed early by a flush (a checkpoint), and that commit failed
                self.last_error = f"the decision store could not commit: {error}"
                self._failed()
                raise StoreCommitError(self.last_error)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((group, future))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._commit)
            await future
        return result

    def _commit(self) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        self.store.commit_group()
        failed = False
        for group, future in waiters:
            error = self.store.group_error(group)
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                failed = True
                self.last_error = f"the decision store could not commit: {error}"
                future.set_exception(StoreCommitError(self.last_error))
        if failed:
            self._failed()
        elif waiters:
            self.last_error = None

    def _failed(self) -> None:
        log.error("a group commit failed; resynchronising the router with the store")
        self._resync_due = True
        try:
            self._resync()
        except Exception:
            log.exception("resynchronising the router failed; retrying before the next request")

    def _resync(self) -> None:
        """Rebuild the router from the store; until that succeeds (the store is back), requests get its error
        (a :class:`~agents.online.errors.StoreError`: HTTP 503) instead of being served from a state the log
        does not hold."""
        self.router.resync()
        self._resync_due = False

    def close(self) -> None:
        """Commit what is still open (at shutdown)."""
        if self._waiters:
            self._commit()
        else:
            self.store.commit_group()
