"""A cache of decisions bounded in bytes: the open decisions a router keeps in memory for their feedback.

Bounding by count let a client fill memory with large entries (a 200k-character prompt each); the budget here is
in bytes, estimated from what a :class:`~agents.online.stores.base.Decision` holds. Evicted entries are not lost:
they are in the store, which the router reads when their feedback arrives.
"""

from __future__ import annotations

from collections import OrderedDict

from agents.online.stores.base import Decision

# Python objects around the arrays and strings of a decision (the record, two ndarrays, a dozen fields).
_OVERHEAD_BYTES = 1200


def decision_bytes(d: Decision) -> int:
    """Estimated memory of ``d`` in bytes (strings counted at 4 bytes per character, CPython's widest)."""
    text = len(d.prompt or "") + len(d.request_id or "") + len(d.decision_id)
    return _OVERHEAD_BYTES + int(d.features.nbytes) + int(d.probabilities.nbytes) + 4 * text


class DecisionCache:
    """Decisions by key, oldest evicted first once the estimated total exceeds ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Decision, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def put(self, key: str, d: Decision) -> None:
        size = decision_bytes(d)
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if size > self.max_bytes:
            return
        self._items[key] = (d, size)
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.nbytes -= evicted

    def get(self, key: str) -> Decision | None:
        item = self._items.get(key)
        return None if item is None else item[0]

    def pop(self, key: str) -> Decision | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.nbytes -= item[1]
        return item[0]

    def values(self, last: int) -> list[Decision]:
        """The ``last`` newest decisions, oldest first."""
        out: list[Decision] = []
        for key in reversed(self._items):
            if len(out) >= last:
                break
            out.append(self._items[key][0])
        return out[::-1]

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0
