"""What the SQL decision stores do the same way, whatever the database: :class:`SQLStoreBase`.

A store built on it keeps the common tables (``policies``, ``decisions``, ``feedback`` …, laid out as
:mod:`agents.online.stores.sql` says) and provides a few hooks — :meth:`SQLStoreBase._rows` (a read),
``_placeholder`` (its driver's parameter mark), ``_decision_from_row``, ``policy_versions`` and ``location`` — and
gets the bookkeeping of group commit (which thread defers its writes, which group they joined, whether it
committed), the check that a version id names one policy, the monitoring totals and the export in the canonical
format. Opening, committing and rolling back the group transaction stay with the store.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from agents.online.errors import DecisionConflictError, DecisionNotFoundError
from agents.online.stores.base import Decision, PolicyVersion, StoreCounts
from agents.online.stores.export import bandit_feedback, check_versions, traffic_dataset
from agents.online.stores.sql import DECISION_COLUMNS, N_DECISION_COLUMNS, qualified
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError

# Errors of this many of the latest failed groups are kept for their waiters.
_KEEP_ERRORS = 64


def repeated_request(request_id: str | None) -> DecisionConflictError:
    return DecisionConflictError(f"request_id {request_id!r} already has a decision; retries get that one")


def repeated_decision(d: Decision) -> DecisionConflictError:
    return DecisionConflictError(
        f"decision {d.decision_id!r} (seq {d.seq}) is already logged; decision ids and sequence numbers are used once"
    )


def repeated_feedback(decision_id: str) -> DecisionConflictError:
    return DecisionConflictError(
        f"decision {decision_id!r} already has feedback; feedback is accepted once per decision"
    )


def unknown_decision(decision_id: str) -> DecisionNotFoundError:
    return DecisionNotFoundError(f"unknown decision_id {decision_id!r}: this store never issued it")


def repeated_call(decision_id: str) -> DecisionConflictError:
    return DecisionConflictError(
        f"an upstream call of decision {decision_id!r} is already logged at that index; each index is logged once"
    )


class SQLStoreBase(ABC):
    """Group-commit bookkeeping, policy-version checks, totals and export for a SQL decision store."""

    _closed: bool
    _placeholder: str  # the driver's parameter mark: "?" (sqlite3) or "%s" (psycopg)

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store lives, for messages."""

    if (
        TYPE_CHECKING
    ):  # the rollout records of every SQL store (agents.online.stores.rollout.SQLRolloutRecords)

        def canary_propensities(self) -> dict[str, float]: ...

    @abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of a read of committed data."""

    @abstractmethod
    def _decision_from_row(self, row: Sequence[Any]) -> Decision:
        """The decision of a row in :data:`~agents.online.stores.sql.DECISION_COLUMNS` order."""

    @abstractmethod
    def policy_versions(self) -> dict[str, PolicyVersion]:
        """Every version served, in order of registration."""

    @abstractmethod
    def commit_group(self) -> None:
        """Commit the open group transaction, if any. On failure it is rolled back and the error is kept for
        :meth:`group_error` (it is not raised: the waiters of the group each learn it)."""

    # ------------------------------------------------------------------ group commit
    def _init_deferral(self) -> None:
        self._deferring: int | None = None  # the thread whose writes are being deferred
        self._deferred_group: int | None = None
        self._group_id = 0
        self._group_errors: dict[int, BaseException] = {}

    def begin_deferred(self) -> None:
        """Start deferring the calling thread's writes into one shared transaction (group commit).

        Until :meth:`end_deferred`, writes join an open group transaction (begun on the first write) and return
        without committing; :meth:`commit_group` commits them all at once. A server calls this around each request
        and acknowledges the requests only after the group committed, so every acknowledged write is still
        committed first, while concurrent requests share one commit. The group holds the store's writer from its
        first write to its commit: other threads' writes wait, so deferring suits a single-threaded event loop that
        commits on its next iteration.
        """
        if self._closed:
            raise ConfigurationError(f"the decision store {self.location} is closed")
        self._deferring = threading.get_ident()
        self._deferred_group = None

    def end_deferred(self, discard: bool = False) -> int | None:
        """Stop deferring; the id of the group this deferral wrote into (to pass to :meth:`group_error`), if any.

        A store undoes the deferral's writes on ``discard`` (its savepoint); this base only ends the bookkeeping.
        """
        self._deferring = None
        group, self._deferred_group = self._deferred_group, None
        return group

    def group_error(self, group: int) -> BaseException | None:
        """The error that rolled back group ``group`` (``None``: it committed, or is still open)."""
        return self._group_errors.get(group)

    def _keep_group_error(self, group: int, error: BaseException) -> None:
        self._group_errors[group] = error
        while len(self._group_errors) > _KEEP_ERRORS:
            del self._group_errors[next(iter(self._group_errors))]

    # ------------------------------------------------------------------ policies
    def _recorded(self, version: str, kind: str, models: Sequence[str]) -> bool:
        """Whether ``version`` is recorded already (for this same policy kind and models).

        Raises:
            ConfigurationError: ``version`` is recorded for another kind or other models.
        """
        prev = self.policy_versions().get(version)
        if prev is None:
            return False
        if prev.models != tuple(models) or prev.kind != kind:
            raise ConfigurationError(
                f"policy version {version!r} is already recorded for a {prev.kind} over {list(prev.models)}; "
                "give the new policy a new version id"
            )
        return True

    # ------------------------------------------------------------------ totals and export
    def counts(self) -> StoreCounts:
        """Totals for monitoring, computed with a few aggregate queries."""
        out = StoreCounts()
        for total, pending in self._rows(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END), 0) FROM decisions"
        ):
            out.decisions, out.pending = int(total), int(pending)
        out.feedback = {
            r[0]: int(r[1]) for r in self._rows("SELECT source, COUNT(*) FROM feedback GROUP BY source")
        }
        out.decisions_by_model = {
            r[0]: int(r[1]) for r in self._rows("SELECT model, COUNT(*) FROM decisions GROUP BY model")
        }
        for model, n, reward in self._rows(
            "SELECT d.model, COUNT(*), SUM(f.reward) FROM feedback f JOIN decisions d "
            "ON d.decision_id = f.decision_id GROUP BY d.model"
        ):
            out.feedback_by_model[model] = int(n)
            out.reward_by_model[model] = float(reward)
        return out

    def export(
        self,
        *,
        versions: Sequence[str] | None = None,
        include_default: bool = False,
        models: Sequence[str] | None = None,
    ) -> LoggedDataset:
        """The logged traffic in the canonical format: a partial-information, bandit-logged dataset.

        One query per ``route`` decision that received feedback (cascade decisions are excluded: their propensity
        is over stop/continue draws, not over a single model). Only the chosen model's cell is observed:
        ``quality`` and ``cost`` (USD) as reported, ``latency_s`` when reported; ``logged_action`` is the chosen
        model and ``propensity`` its probability under the distribution the router sampled from (for a decision
        made while a canary served, under the serving mix: :meth:`canary_propensities`).

        Args:
            versions: export only decisions of these policy versions (default: all).
            include_default: also export decisions closed by the default reward after the wait time (their
                quality was not observed, so they are excluded by default).
            models: column order of the models; default the served versions' models in order of first use.

        Raises:
            ConfigurationError: nothing to export, unknown ``versions``, or the selected decisions have different
                feature widths.
        """
        known = self.policy_versions()
        check_versions(versions, known)
        sql = (
            f"SELECT {qualified(DECISION_COLUMNS, 'd')}, f.quality, f.cost, f.latency_s "
            "FROM decisions d JOIN feedback f ON f.decision_id = d.decision_id WHERE d.kind = 'route'"
        )
        params: list[Any] = []
        if not include_default:
            sql += " AND f.source = 'client'"
        if versions is not None:
            sql += f" AND d.policy_version IN ({', '.join([self._placeholder] * len(versions))})"
            params.extend(versions)
        rows = self._rows(sql + " ORDER BY d.seq", params)
        if not rows:
            raise ConfigurationError(
                f"nothing to export from {self.location}: no routed decision has feedback yet"
                + ("" if versions is None else f" for versions {list(versions)}")
            )
        n = N_DECISION_COLUMNS
        decisions = [self._decision_from_row(r[:n]) for r in rows]
        mixture = self.canary_propensities()
        if mixture:  # decisions made while a canary served: the probability of the model alone (see there)
            decisions = [
                d if d.decision_id not in mixture else replace(d, propensity=mixture[d.decision_id])
                for d in decisions
            ]
        return traffic_dataset(
            decisions,
            [(r[n], r[n + 1], r[n + 2]) for r in rows],
            known,
            models=models,
            include_default=include_default,
            source=f"routing_env DecisionStore {self._export_name()}",
        )

    def _export_name(self) -> str:
        """How the export's ``meta["source"]`` names the store."""
        return self.location

    def export_bandit_feedback(
        self, cost_weight: float = 0.0, cost_scale: float | Literal["max_mean"] = "max_mean", **kwargs: Any
    ) -> Any:
        """The exported logs as a :class:`routing_env.ope.BanditFeedback` for off-policy evaluation.

        ``cost_weight`` (λ) and ``cost_scale`` (USD, or ``"max_mean"``) define the reward the estimators score;
        other keyword arguments go to :meth:`export`.
        """
        return bandit_feedback(self.export(**kwargs), cost_weight, cost_scale)
