"""Where a PostgreSQL store connects, how it is named in messages, and what a driver error means to its callers.

:class:`Target` parses the URL once: the connection string for psycopg (with a connect timeout and an application
name unless the URL sets them), the URL without its password for messages and reprs, and the password to scrub
from any driver message. :meth:`Target.error` turns a driver error into the routing-env error callers handle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agents.online.errors import DecisionConflictError, LogConflictError, StoreError, StoreUnavailableError
from agents.online.stores.postgres_schema import STALE_POSITION
from routing_env.errors import ConfigurationError

# A password after ``user:`` in a URL, for scrubbing driver messages that might echo one.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def driver() -> Any:
    """The psycopg module, or a :class:`ConfigurationError` naming the extra to install."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401  (part of the extra: fail here, not at the first read)
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL decision store needs the postgres extra: pip install 'routing-env[postgres]'"
        ) from None
    return psycopg


@dataclass(frozen=True)
class Target:
    """A parsed store URL: ``conninfo`` for the driver, ``location`` for people, ``secrets`` to scrub."""

    conninfo: str
    location: str
    secrets: tuple[str, ...]

    @classmethod
    def parse(cls, url: str, connect_timeout_s: float) -> Target:
        """``url`` (a ``postgresql://`` URL or a libpq conninfo string) as a target.

        Raises:
            ConfigurationError: ``url`` cannot be parsed (the message never shows a password).
        """
        pg = driver()
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(str(url))
        except pg.Error as exc:
            raise ConfigurationError(f"store: not a valid PostgreSQL URL: {scrub(str(exc), ())}") from None
        secrets = (str(params["password"]),) if params.get("password") else ()
        location = display_url(params)
        params.setdefault("connect_timeout", max(1, round(connect_timeout_s)))
        params.setdefault("application_name", "routing-env")
        return cls(make_conninfo("", **params), location, secrets)

    def error(self, exc: BaseException, doing: str) -> Exception:
        """The routing-env error for the driver error ``exc`` met while the store ``doing`` something.

        An unreachable, read-only or full server is :class:`StoreUnavailableError` (a :class:`StoreError`), a stale
        log position :class:`LogConflictError`, a uniqueness violation :class:`DecisionConflictError`, any other
        driver error a :class:`StoreError`; other errors are returned as they are. No text holds the password.
        """
        import psycopg
        from psycopg import errors

        text = scrub(str(exc).strip(), self.secrets)
        if getattr(exc, "sqlstate", None) == STALE_POSITION:
            return LogConflictError(f"the decision store {self.location}: {text}; nothing was written")
        if isinstance(exc, errors.UniqueViolation):
            return DecisionConflictError(f"the decision store {self.location} already holds that row: {text}")
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return StoreUnavailableError(
                f"the decision store {self.location} is read-only (a standby?): {text}"
            )
        # Class 53 (disk full, out of memory, too many connections) is an OperationalError too.
        if isinstance(exc, errors.OperationalError) or type(exc).__name__ == "PoolTimeout":
            return StoreUnavailableError(f"the decision store {self.location} {doing}: {text}")
        if isinstance(exc, psycopg.Error):
            return StoreError(f"the decision store {self.location} {doing}: {text}")
        return exc if isinstance(exc, Exception) else RuntimeError(text)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without any URL password or any of ``secrets``."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def display_url(params: dict[str, Any]) -> str:
    """``postgresql://user@host:port/dbname`` (a socket directory as ``?host=``) — never the password."""
    user = params.get("user")
    host = str(params.get("host") or "")
    port = params.get("port")
    query = []
    if host.startswith("/"):
        query.append(f"host={host}")
        host = ""
    if port and not host:
        query.append(f"port={port}")
    where = host + (f":{port}" if port and host else "")
    tail = "?" + "&".join(query) if query else ""
    return f"postgresql://{user + '@' if user else ''}{where}/{params.get('dbname') or ''}{tail}"


def refuse_nul(**texts: str | None) -> None:
    """Refuse text holding NUL, which PostgreSQL cannot store (``ConfigurationError`` naming the argument)."""
    for name, text in texts.items():
        if text is not None and "\x00" in text:
            raise ConfigurationError(
                f"{name} contains a NUL character (\\x00), which a PostgreSQL store cannot hold; remove it"
            )
