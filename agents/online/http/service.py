"""The service's settings (one validated config) and the state its routers share."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from agents.online.http.commit import GroupCommit
from agents.online.router import OnlineRouter
from routing_env.errors import ConfigurationError

TOKEN_ENV = "ROUTING_ENV_API_TOKEN"
DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of the online router's HTTP service (validated on construction).

    Attributes:
        api_token: bearer token of the admin endpoints; ``None`` = open (see :meth:`resolve` for the default).
        max_body_bytes: larger request bodies get 413 (≥ 1024).
        expire_interval_s: how often (s) to expire decisions past the router's ``feedback_timeout_s``; ``None`` =
            a quarter of the timeout, at most 5 s. Ignored when the router has no timeout.
        policy_root: when set, ``POST /v1/policy`` only loads directories inside it (resolved).
    """

    api_token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    expire_interval_s: float | None = None
    policy_root: Path | None = None

    def __post_init__(self) -> None:
        if int(self.max_body_bytes) < 1024:
            raise ConfigurationError(f"max_body_bytes must be ≥ 1024, got {self.max_body_bytes!r}")
        if self.expire_interval_s is not None and not (
            math.isfinite(self.expire_interval_s) and self.expire_interval_s > 0
        ):
            raise ConfigurationError(f"expire_interval_s must be > 0, got {self.expire_interval_s!r}")

    @classmethod
    def resolve(
        cls,
        *,
        api_token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        expire_interval_s: float | None = None,
        policy_root: str | Path | None = None,
    ) -> ServiceSettings:
        """Settings from keyword options: the token defaults to ``$ROUTING_ENV_API_TOKEN`` (empty = unset)."""
        return cls(
            api_token=api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None,
            max_body_bytes=int(max_body_bytes),
            expire_interval_s=None if expire_interval_s is None else float(expire_interval_s),
            policy_root=None if policy_root is None else Path(policy_root).resolve(),
        )

    def expire_interval(self, router: OnlineRouter) -> float | None:
        """Seconds between expiry rounds for ``router`` (``None``: its decisions never expire)."""
        timeout = router.config.feedback_timeout_s
        if timeout is None:
            return None
        return self.expire_interval_s if self.expire_interval_s is not None else min(timeout / 4, 5.0)


@dataclass
class Service:
    """What the service's routers share: the router, its group commit and the settings."""

    router: OnlineRouter
    committer: GroupCommit
    settings: ServiceSettings

    @classmethod
    def create(cls, router: OnlineRouter, settings: ServiceSettings) -> Service:
        return cls(router=router, committer=GroupCommit(router), settings=settings)
