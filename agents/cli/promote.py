"""``routing-env promote``: the off-policy promotion gate — serve a candidate only when the log says it is better.

::

    routing-env promote --store runs/router.db --candidate runs/candidate [--min-decisions 1000] [--margin 0.0]
        [--confidence 0.95] [--estimator DR]
    routing-env promote --url http://127.0.0.1:8000 --candidate runs/candidate [options]   # a running server
    routing-env promote --store runs/router.db --history

The gate estimates candidate − live on the logged traffic with a paired off-policy estimator (the same decisions,
the difference of the per-decision IPS/DR terms, so the interval is on the difference) and promotes only if its
lower ``--confidence`` bound exceeds ``--margin`` and the diagnostics pass (enough decisions, a logger that
explores, no support violation, enough effective sample size). It prints the estimate, the interval and the
reason, and exits 0 when it promotes, 1 when it refuses (2 on an error).

With ``--store`` the live router is restored from the store (checkpoint plus the log after it) and, when the
gate passes, the swap is appended to the store's log with the candidate's bytes: servers on a PostgreSQL store
switch at their next log read (every replica at the same log position), and the next ``routing-env serve`` on
either store serves the candidate. A SQLite store has one writer, so no server may hold it; promote through a
running one with ``--url``: it runs the gate on its own store and swaps at once (``POST /v1/promote``; the admin
token comes from $ROUTING_ENV_API_TOKEN). Either way the decision, its evidence
and the command are written to the store; ``--history`` lists them (read-only, also beside a running server).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any

from agents.cli.common import add_command
from routing_env.errors import ConfigurationError

#: Exit status of a refusal (0: promoted; 2: an error).
REFUSED = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "promote", "promote a candidate policy only if the logged evidence says it is better", __doc__
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--store",
        help="the decision store: a SQLite file (no server writing it) or a postgresql:// URL (running servers "
        "switch at their next log read)",
    )
    where.add_argument(
        "--url", help="a running server's base URL (its admin endpoint runs the gate and swaps)"
    )
    p.add_argument("--candidate", help="the candidate's saved policy directory")
    p.add_argument("--min-decisions", type=int, default=1000, help="logged decisions the gate needs")
    p.add_argument("--margin", type=float, default=0.0, help="δ: promote only if the lower bound exceeds it")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the one-sided bounds")
    p.add_argument("--estimator", default="DR", help="DR, IPS, SNIPS, SNDR, SwitchDR or DRos")
    p.add_argument("--history", action="store_true", help="list the gate's past decisions and exit")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server (--url)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.history:
        return _history(args)
    if not args.candidate:
        raise ConfigurationError("--candidate is required (the saved policy directory to evaluate)")
    if args.url:
        return _remote(args)
    return _local(args)


def _command(args: argparse.Namespace) -> str:
    """The command line that ran, with every setting of the gate spelled out (defaults included)."""
    parts = ["routing-env", "promote", "--store", args.store, "--candidate", args.candidate]
    parts += ["--min-decisions", str(args.min_decisions), "--margin", repr(args.margin)]
    parts += ["--confidence", repr(args.confidence), "--estimator", args.estimator]
    return shlex.join(parts)


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


def _local(args: argparse.Namespace) -> int:
    from agents.online import OnlineRouter, open_store
    from agents.online.rollout import GateConfig
    from agents.online.rollout.promotion import promote
    from agents.online.rollout.shadows import rollout_store

    try:
        store = open_store(args.store)
    except ConfigurationError as exc:
        if "already open for writing" not in str(exc):
            raise
        raise ConfigurationError(
            f"{exc}. A running server holds the store: promote through it with --url http://HOST:PORT (it runs the "
            "gate on its own store and swaps at once)"
        ) from None
    try:
        router = OnlineRouter.restore(store)
        done = promote(
            rollout_store(router.store),
            args.candidate,
            router.swap_policy,
            command=_command(args),
            min_decisions=args.min_decisions,
            margin=args.margin,
            confidence=args.confidence,
            cost_weight=router.cost_weight,
            cost_scale=router.served.cost_scale,
            config=GateConfig(estimator=args.estimator),
        )
    finally:
        store.close()
    return _report(done.result.promote, done.result.message, done.record.version, done.result.to_dict(), args)


def _remote(args: argparse.Namespace) -> int:
    import httpx

    from agents.online.http.service import TOKEN_ENV

    token = os.environ.get(TOKEN_ENV)
    headers = {} if not token else {"Authorization": f"Bearer {token}"}
    body = {
        "candidate": os.path.abspath(args.candidate),
        "min_decisions": args.min_decisions,
        "margin": args.margin,
        "confidence": args.confidence,
    }
    try:
        r = httpx.post(args.url.rstrip("/") + "/v1/promote", json=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise ConfigurationError(f"--url {args.url}: the server could not be reached ({exc})") from None
    if r.status_code != 200:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise ConfigurationError(f"--url {args.url}: the server answered {r.status_code}: {detail}")
    out = r.json()
    return _report(out["promoted"], out["message"], out["version"], out["decision"]["evidence"], args)


def _report(
    promoted: bool, message: str, version: str | None, evidence: dict[str, Any], args: argparse.Namespace
) -> int:
    if args.json:
        _say(json.dumps({"promoted": promoted, "version": version, "message": message, "evidence": evidence}))
    else:
        _say(message)
        _say(f"promoted: the store now serves version {version!r}" if promoted else "not promoted")
    return 0 if promoted else REFUSED


def _history(args: argparse.Namespace) -> int:
    from agents.online.rollout.promotion import history_lines
    from agents.online.rollout.shadows import rollout_store
    from agents.online.stores import open_store

    if args.url:
        raise ConfigurationError("--history reads the store: give --store")
    store = open_store(args.store, readonly=True)
    try:
        records = rollout_store(store).gate_history()
    finally:
        store.close()
    if args.json:
        _say(json.dumps([{**r.__dict__, "evidence": json.loads(r.evidence)} for r in records]))
    elif not records:
        _say(f"no gate decision recorded in {args.store}")
    else:
        for line in history_lines(records):
            _say(line)
    return 0
