"""Hot swap as an entry of the store's log: every router on the store switches at the same log position.

:func:`swap_in` appends the swap (the store holds the log's head meanwhile: the router applies the log up to it,
saves the new policy's state as the swap's checkpoint, and the checkpoint and the entry commit together), then
serves the new policy. A router that reads the entry later — another replica, a restart replaying the log, a
resync — applies it with :func:`switch_at` at that position: the feedback before it updated the old policy, the
feedback after it updates the new one, on every copy alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agents.online.errors import StoreError
from agents.online.restore import ROUTER_FEATURIZER
from agents.online.stores.base import Checkpoint
from routing_env.errors import ConfigurationError

if TYPE_CHECKING:
    from agents.online.router import OnlineRouter
    from agents.online.served import Served

log = logging.getLogger("routing_env.serve")


def save_state(router: OnlineRouter, served: Served, path: str | Path) -> None:
    """Save what a checkpoint of ``served`` on ``router`` holds into ``path``: the policy, the budget pacer's
    state, and the featurizer the router was given (when the policy uses it)."""
    served.policy.save(path)
    if router.pacer is not None:
        router.pacer.save(path)
    override = router._featurizer_override
    if override is not None and served.featurizer is override:
        override.save(Path(path) / ROUTER_FEATURIZER)


def swap_in(router: OnlineRouter, served: Served) -> Checkpoint:
    """Register ``served`` (inspected and primed), append its swap to the log and serve it (caller holds the
    router's lock). On failure the router serves what it served (caught up with the log meanwhile) and the log
    holds no swap; the version stays registered.

    Raises:
        StoreError: the store cannot write, or its log is shorter than its head (nothing was written).
    """
    from agents.online.follow import apply_log

    s = served
    router.store.record_policy(
        s.version,
        f"{type(s.policy).__module__}.{type(s.policy).__qualname__}",
        s.models,
        s.n_features,
        time.time(),
    )

    def save(position: int) -> Path:
        # Everything before the swap's position is applied to the old policy first (other replicas' feedback
        # included), so the pacer's state saved with the swap is the one every copy has there.
        while router._feedback_seq < position - 1:
            if apply_log(router) == 0:
                raise StoreError(
                    f"the log of {router.store.location} ends at {router._feedback_seq}, before its head "
                    f"{position - 1}"
                )
        path = router.store.checkpoint_path(s.version, position)
        save_state(router, s, path)
        return path

    ckpt = router.store.append_swap(s.version, save)
    _serve(router, served, ckpt)
    log.info("policy version %r serves from log position %d", s.version, ckpt.last_feedback_seq)
    return ckpt


def switch_at(router: OnlineRouter, ckpt: Checkpoint) -> None:
    """Apply a swap entry read from the log: serve the policy of ``ckpt`` from its position on (caller holds the
    router's lock; the router has applied every entry before it).

    Raises:
        StoreError: this router cannot serve that policy (its own settings refuse it, e.g. a budget pacer with a
            policy that is not cost-aware): it stops at the entry, reports it in its health, and its requests that
            need the log's end get 503, rather than serve on apart from the other replicas.
    """
    try:
        served = router._load(ckpt)
    except ConfigurationError as exc:
        raise StoreError(
            f"the log of {router.store.location} swaps to policy version {ckpt.policy_version!r} at position "
            f"{ckpt.last_feedback_seq}, which this router cannot serve: {exc}"
        ) from None
    _serve(router, served, ckpt)
    log.info(
        "switched to policy version %r at log position %d, as the store's log says",
        ckpt.policy_version,
        ckpt.last_feedback_seq,
    )


def _serve(router: OnlineRouter, served: Served, ckpt: Checkpoint) -> None:
    router._served = served
    router._base, router._since = ckpt, []
    router._feedback_seq = ckpt.last_feedback_seq
    router._checkpoint_due = router.config.checkpoint_every
    router._checkpoint_error = None
