"""The service's settings (one validated config) and the state its routers share."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agents.online.config import check_positive
from agents.online.errors import StoreError
from agents.online.follow import LogFollower
from agents.online.http.commit import GroupCommit
from agents.online.rollout.shadows import Shadows
from agents.online.router import OnlineRouter
from agents.online.stores.rollout import RolloutStore
from routing_env.errors import ConfigurationError

TOKEN_ENV = "ROUTING_ENV_API_TOKEN"
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: Default cap (bytes) of a policy directory ``POST /v1/policy`` loads: files on disk plus declared array sizes.
DEFAULT_MAX_POLICY_BYTES = 512 << 20


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the online router's HTTP service (validated on construction).

    Attributes:
        api_token: bearer token of the admin endpoints. ``None``: admin endpoints answer 403 (closed), unless
            ``insecure_admin``.
        insecure_admin: without a token, open the admin endpoints to loopback clients only (development).
        max_body_bytes: larger request bodies get 413 (≥ 1024).
        expire_interval_s: how often (s) to expire decisions past the router's ``feedback_timeout_s``; ``None`` =
            a quarter of the timeout, at most 5 s. Ignored when the router has no timeout.
        policy_root: when set, ``POST /v1/policy`` only loads directories inside it (resolved; symlinks leading out
            of it are refused).
        max_policy_bytes: ``POST /v1/policy`` refuses directories larger than this (files plus the arrays' sizes
            as their headers declare them, checked before anything is decompressed).
        rate_limit_rps: requests per second each client may send (a token bucket per client address, or per
            bearer token when one is sent); ``None`` = no limit (default).
        rate_limit_burst: the bucket's size: requests a client may send at once before it is limited.
    """

    api_token: str | None = None
    insecure_admin: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    expire_interval_s: float | None = None
    policy_root: Path | None = None
    max_policy_bytes: int = DEFAULT_MAX_POLICY_BYTES
    rate_limit_rps: float | None = None
    rate_limit_burst: int = 100

    def __post_init__(self) -> None:
        if int(self.max_body_bytes) < 1024:
            raise ConfigurationError(f"max_body_bytes must be ≥ 1024, got {self.max_body_bytes!r}")
        check_positive("expire_interval_s", self.expire_interval_s)
        check_positive("rate_limit_rps", self.rate_limit_rps)
        if int(self.max_policy_bytes) < 1:
            raise ConfigurationError(f"max_policy_bytes must be ≥ 1, got {self.max_policy_bytes!r}")
        if int(self.rate_limit_burst) < 1:
            raise ConfigurationError(f"rate_limit_burst must be ≥ 1, got {self.rate_limit_burst!r}")
        if self.api_token is not None and not self.api_token.strip():
            raise ConfigurationError(
                "api_token must not be blank; leave it unset to close the admin endpoints"
            )

    @classmethod
    def resolve(
        cls,
        *,
        api_token: str | None = None,
        policy_root: str | Path | None = None,
        **settings: object,
    ) -> ServiceSettings:
        """Settings from keyword options: the token defaults to ``$ROUTING_ENV_API_TOKEN`` (empty = unset)."""
        return cls(
            api_token=api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None,
            policy_root=None if policy_root is None else Path(policy_root).resolve(),
            **settings,  # type: ignore[arg-type]
        )

    def expire_interval(self, router: OnlineRouter) -> float | None:
        """Seconds between expiry rounds for ``router`` (``None``: its decisions never expire)."""
        timeout = router.config.feedback_timeout_s
        if timeout is None:
            return None
        return self.expire_interval_s if self.expire_interval_s is not None else min(timeout / 4, 5.0)


@dataclass
class Service:
    """What the service's routers share: the router, its group commit, the settings, and the shadows scored on
    its decisions (``None`` when its store keeps no rollout tables)."""

    router: OnlineRouter
    committer: GroupCommit
    settings: ServiceSettings
    shadows: Shadows | None = None
    #: Keeps the router caught up with a log other replicas append to (started with the app; ``None``: the
    #: store has one writer, this router).
    follower: LogFollower | None = None

    @classmethod
    def create(cls, router: OnlineRouter, settings: ServiceSettings) -> Service:
        shadows = Shadows(router) if isinstance(router.store, RolloutStore) else None
        if shadows is not None:
            router.decision_hooks.append(shadows.submit)
        return cls(router=router, committer=GroupCommit(router), settings=settings, shadows=shadows)

    def health(self) -> str | None:
        """Why the service cannot serve (``None``: healthy): the router's own problem, a store that failed
        its last commit, or a log that cannot be followed."""
        follower_error = None if self.follower is None else self.follower.error
        return self.router.health() or self.committer.last_error or follower_error

    def log_state(self) -> tuple[int, int]:
        """``(applied, head)``: the last log position the router applied and the log's head (its lag is the
        difference). The head is read from the store; when that fails, the last head the follower saw."""
        applied = self.router.stats()["last_feedback_seq"]
        try:
            head = self.router.store.log_position()
        except StoreError:
            head = applied if self.follower is None else self.follower.head
        return applied, max(head, applied)
