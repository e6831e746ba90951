"""What a restart resumes from: the checks that refuse a silent reset, and the report of what was restored.

A router restores its policy from the store's newest checkpoint plus the feedback committed after it. That is only
the state the router had if the checkpoint is the one the store recorded and it covers no feedback the store lost;
otherwise serving would quietly start over while the store still says the policy learned from everything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agents.online.stores import open_store
from agents.online.stores.base import Checkpoint, DecisionStore
from routing_env.errors import ConfigurationError
from routing_env.policy import load_policy

if TYPE_CHECKING:
    from agents.online.router import OnlineRouter

log = logging.getLogger("routing_env.serve")
R = TypeVar("R", bound="OnlineRouter")

#: Where a checkpoint keeps the featurizer the router was given (the policy itself carries none).
ROUTER_FEATURIZER = "router-featurizer"


@dataclass(frozen=True)
class RestoreReport:
    """What :meth:`~agents.online.OnlineRouter.restore` resumed from.

    Attributes:
        checkpoint: the policy directory loaded.
        version: its policy version.
        last_feedback_seq: the last feedback ``seq`` the checkpoint includes.
        replayed: feedback applied on top of it, from the store.
        skipped: ``seq`` of stored feedback the router's bounds refuse (not applied, as serving would refuse it).
        featurizer: where the router's featurizer came from (``None``: the policy's own, or none).
    """

    checkpoint: str
    version: str
    last_feedback_seq: int
    replayed: int
    skipped: tuple[int, ...]
    featurizer: str | None

    def describe(self, store: str) -> str:
        """One line for the log: what was restored from where."""
        line = (
            f"restored version {self.version!r} from checkpoint {self.checkpoint} (feedback up to seq "
            f"{self.last_feedback_seq}) and replayed {self.replayed} feedback from {store}"
        )
        if self.featurizer:
            line += f"; featurizer from {self.featurizer}"
        if self.skipped:
            shown = ", ".join(str(s) for s in self.skipped[:10]) + (" …" if len(self.skipped) > 10 else "")
            line += f"; skipped {len(self.skipped)} stored feedback the bounds refuse (seq {shown})"
        return line


def applied_count(store: DecisionStore) -> int:
    """How many feedback rows of ``store`` the policy learned from."""
    return sum(1 for fb, _ in store.feedback() if fb.applied)


def check_checkpoint(store: DecisionStore, ckpt: Checkpoint) -> None:
    """Refuse to restore from ``ckpt`` when that would lose learning silently.

    Raises:
        ConfigurationError: its directory is missing, or it claims feedback the store does not hold.
    """
    if not Path(ckpt.path).is_dir():
        raise ConfigurationError(
            f"the store {store.location} was last checkpointed to {ckpt.path} (version {ckpt.policy_version!r}, "
            f"feedback up to seq {ckpt.last_feedback_seq}), which does not exist: serving without it would drop "
            f"what the policy learned from the store's {applied_count(store)} applied feedback. Put the directory "
            "back (checkpoint paths are relative to the database's directory), or start on a new store"
        )
    held = store.log_position()
    if ckpt.last_feedback_seq > held:
        raise ConfigurationError(
            f"the checkpoint {ckpt.path} includes the log up to position {ckpt.last_feedback_seq}, but the store "
            f"{store.location} holds it only up to position {held}: the store lost committed feedback (a restored "
            "backup, or a lost write-ahead log); restore the matching database"
        )


def check_new_store(store: DecisionStore) -> None:
    """Refuse to start a policy from scratch on a store that already holds applied feedback but no checkpoint.

    Raises:
        ConfigurationError: naming the count.
    """
    if store.latest_checkpoint() is None:
        n = applied_count(store)
        if n:
            raise ConfigurationError(
                f"the store {store.location} holds {n} applied feedback but no policy checkpoint, so what the "
                "policy learned from them cannot be restored; start on a new store"
            )


def saved_featurizer(checkpoint: str | Path) -> tuple[Any, str | None]:
    """The featurizer a checkpoint keeps for the router, and where it was (``(None, None)``: none)."""
    path = Path(checkpoint) / ROUTER_FEATURIZER
    if not path.is_dir():
        return None, None
    from routing_env.data import load_featurizer

    return load_featurizer(path), str(path)


def restore_router(cls: type[R], store: DecisionStore | str | Path, kwargs: dict[str, Any]) -> R:
    """What :meth:`agents.online.OnlineRouter.restore` does: open ``store``, check its newest checkpoint, build a
    router of class ``cls`` on the saved policy (and featurizer) and replay the feedback logged after it."""
    if "version" in kwargs:
        raise ConfigurationError("restore() takes the version from the checkpoint; do not pass version=")
    opened = isinstance(store, (str, os.PathLike))
    db = open_store(store) if isinstance(store, (str, os.PathLike)) else store
    try:
        ckpt = db.latest_checkpoint()
        if ckpt is None:
            raise ConfigurationError(
                f"the store {db.location} has no policy checkpoint to restore; start it with "
                "OnlineRouter(policy, store)"
            )
        check_checkpoint(db, ckpt)
        source = None
        if kwargs.get("featurizer") is None:
            kwargs["featurizer"], source = saved_featurizer(ckpt.path)
        router = cls(load_policy(ckpt.path), db, version=ckpt.policy_version, _restoring=True, **kwargs)
        with router._lock:
            skipped = router._replay(ckpt)
    except BaseException:
        if opened:
            db.close()
        raise
    router.restored = RestoreReport(
        ckpt.path, ckpt.policy_version, ckpt.last_feedback_seq, len(router._since), tuple(skipped), source
    )
    log.info(router.restored.describe(db.location))
    return router
