"""``routing-env serve``: run the online router's HTTP service on one uvicorn worker.

A new store starts from ``--policy`` (a saved policy directory); an existing store resumes from its last checkpoint
plus the feedback logged after it, so restarting the same command after a crash loses nothing acknowledged (and a
store whose checkpoint or write-ahead log went missing is refused, never silently reset).

Admin endpoints (hot swap, checkpoint, export) need $ROUTING_ENV_API_TOKEN; without it they answer 403, unless
--insecure-admin opens them to loopback clients. Binding a non-loopback --host without a token is refused.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.online import OnlineRouter


_STORE_HELP = (
    "SQLite file of decisions and feedback (created if absent), or a postgresql:// URL (password from PGPASSWORD "
    "or ~/.pgpass)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a routing policy over HTTP (route, feedback, cascades, hot swap)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", required=True, help=_STORE_HELP)
    p.add_argument("--policy", help="saved policy directory to serve when the store has no checkpoint yet")
    p.add_argument("--version", help="version id of --policy (default v<n>)")
    p.add_argument(
        "--featurizer", help="saved featurizer directory, to route prompts for a policy carrying none"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--cost-weight", type=float, default=None, help="λ (default: the policy's own, else 0)")
    p.add_argument("--cost-scale", type=float, default=None, help="USD per unit of λ (default: the policy's)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="save the policy every N updates")
    p.add_argument("--feedback-timeout", type=float, default=None, help="seconds before a decision expires")
    p.add_argument(
        "--default-quality", type=float, help="quality applied to expired decisions (default none)"
    )
    p.add_argument("--seed", type=int, default=0, help="root seed of the routing draws")
    p.add_argument(
        "--max-cost", type=float, help="largest USD cost per model call (default 100 × the dearest mean)"
    )
    p.add_argument("--max-latency", type=float, default=3600.0, help="largest latency_s feedback may report")
    p.add_argument(
        "--store-prompts",
        default="featurized",
        choices=["featurized", "always", "never"],
        help="which prompts the store keeps (default: those routed by prompt, not those sent beside features)",
    )
    p.add_argument(
        "--max-stored-prompt-chars",
        type=int,
        default=4096,
        help="a stored prompt keeps at most this many characters",
    )
    p.add_argument(
        "--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability (FULL: fsync)"
    )
    p.add_argument(
        "--wal-max-mb", type=float, default=16.0, help="truncate the write-ahead log past this size (MiB)"
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger requests get 413")
    p.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a whole request (408 after)",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests per second per client address (default: no limit)",
    )
    p.add_argument(
        "--rate-burst", type=int, default=100, help="requests a client may send at once (--rate-limit)"
    )
    p.add_argument(
        "--policy-root",
        help="hot swaps load policy directories only inside this one (default: the parent of --policy, else the "
        "store's directory)",
    )
    p.add_argument(
        "--max-policy-mb", type=float, default=512.0, help="largest policy directory a hot swap loads"
    )
    p.add_argument(
        "--insecure-admin",
        action="store_true",
        help="without a token, open the admin endpoints to loopback clients (development only)",
    )
    p.add_argument(
        "--canary",
        type=float,
        default=None,
        metavar="SPLIT",
        help="let --canary-policy serve this share of traffic, promoted or rolled back by the sequential gate",
    )
    p.add_argument("--canary-policy", help="the canary's saved policy directory (with --canary)")
    p.add_argument(
        "--canary-margin", type=float, default=0.0, help="δ of the canary's promote/rollback bounds"
    )
    p.add_argument(
        "--canary-min-decisions", type=int, default=1000, help="decisions before the canary may be promoted"
    )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"routing-env serve: {message}", file=sys.stderr, flush=True)


def check_exposure(host: str, token: str | None, insecure_admin: bool) -> None:
    """Refuse to expose the admin endpoints: a non-loopback host needs a token, and --insecure-admin loopback.

    Raises:
        ConfigurationError: naming what to set.
    """
    from agents.online.http.admin import is_loopback
    from agents.online.http.service import TOKEN_ENV
    from routing_env.errors import ConfigurationError

    if token is not None:
        return
    if insecure_admin and not is_loopback(host):
        raise ConfigurationError(
            f"--insecure-admin opens the admin endpoints to loopback clients only; it cannot be combined with "
            f"--host {host}: set ${TOKEN_ENV} instead"
        )
    if not is_loopback(host):
        raise ConfigurationError(
            f"refusing to bind {host} without an admin token: set ${TOKEN_ENV} to a secret (clients send "
            "'Authorization: Bearer <token>'), and put TLS in front of the service"
        )


def build_router(args: argparse.Namespace) -> OnlineRouter:
    """The :class:`~agents.online.OnlineRouter` the arguments describe (restored when the store has a checkpoint)."""
    from agents.online import OnlineRouter, open_store
    from agents.online.restore import check_new_store
    from agents.online.stores import is_url
    from routing_env.errors import ConfigurationError
    from routing_env.policy import load_policy

    featurizer = None
    if args.featurizer:
        from routing_env.data import load_featurizer

        featurizer = load_featurizer(args.featurizer)
    store_options: dict[str, Any] = {"synchronous": args.synchronous}
    if not is_url(args.store):  # the write-ahead log bound is SQLite's
        store_options["wal_max_bytes"] = int(args.wal_max_mb * (1 << 20))
    store = open_store(args.store, **store_options)
    options: dict[str, Any] = {
        "cost_weight": args.cost_weight,
        "cost_scale": args.cost_scale,
        "checkpoint_every": args.checkpoint_every,
        "feedback_timeout_s": args.feedback_timeout,
        "default_quality": args.default_quality,
        "seed": args.seed,
        "max_cost": args.max_cost,
        "max_latency_s": args.max_latency,
        "store_prompts": args.store_prompts,
        "max_stored_prompt_chars": args.max_stored_prompt_chars,
    }
    try:
        if store.latest_checkpoint() is not None:
            router = OnlineRouter.restore(store, featurizer=featurizer, **options)
            assert router.restored is not None
            _say(router.restored.describe(store.location))
            if args.policy:
                _say(
                    f"{store.location} already serves version {router.version!r}; resuming it and ignoring --policy "
                    f"{args.policy} (hot swap with POST /v1/policy)"
                )
            return router
        check_new_store(store)
        if not args.policy:
            raise ConfigurationError(
                f"the store {store.location} is new: give --policy DIR, a saved policy directory"
            )
        router = OnlineRouter(
            load_policy(args.policy), store, version=args.version, featurizer=featurizer, **options
        )
    except BaseException:
        store.close()  # releases the store's writer lock
        raise
    _say(
        f"serving version {router.version!r} from {Path(args.policy).resolve()} on the new store {store.location}"
    )
    return router


def _start_canary(app: Any, args: argparse.Namespace) -> None:
    from agents.online.http.canary import start_canary
    from agents.online.rollout import CanaryConfig, GateConfig

    gate = GateConfig(
        method="sequence",
        estimator="IPS",
        min_decisions=args.canary_min_decisions,
        margin=args.canary_margin,
        plan_decisions=max(10_000, args.canary_min_decisions),
    )
    config = CanaryConfig(split=args.canary, gate=gate)
    canary = start_canary(app.state.service, args.canary_policy, config, at_startup=True)
    _say(
        f"canary {canary.version}: {args.canary_policy} serves {canary.split:.1%} of traffic (GET /v1/canary)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        print("routing-env serve needs the serve extra: pip install 'routing-env[serve]'", file=sys.stderr)
        return 2
    from agents.online import create_app
    from agents.online.http import server
    from agents.online.http.service import TOKEN_ENV
    from routing_env.errors import ConfigurationError

    if not args.read_timeout > 0:
        raise ConfigurationError(f"--read-timeout must be > 0 seconds, got {args.read_timeout!r}")
    token = os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, token, args.insecure_admin)
    if (args.canary is None) != (args.canary_policy is None):
        raise ConfigurationError("--canary SPLIT and --canary-policy DIR go together")
    router = build_router(args)
    from agents.online.stores import is_url

    # A database URL has no directory: hot swaps then load from beside --policy, else the working directory.
    beside = args.policy or (None if is_url(args.store) else args.store)
    root = args.policy_root or str(Path(beside).resolve().parent if beside else Path.cwd())
    app = create_app(
        router,
        api_token=token,
        insecure_admin=args.insecure_admin,
        max_body_bytes=args.max_body_bytes,
        policy_root=root,
        max_policy_bytes=int(args.max_policy_mb * (1 << 20)),
        rate_limit_rps=args.rate_limit,
        rate_limit_burst=args.rate_burst,
    )
    warning = router.exploration_warning()
    if warning:
        _say(f"warning: {warning}")
    if args.canary is not None:
        try:
            _start_canary(app, args)
        except BaseException:
            router.store.close()
            raise
    if token is None:
        if args.insecure_admin:
            _say(
                "warning: --insecure-admin: the admin endpoints are open to every loopback client, without a token"
            )
        else:
            _say(f"admin endpoints are closed (403): set ${TOKEN_ENV} to use them")
    _say(
        f"version {router.version!r} on http://{args.host}:{args.port} (store {router.store.location}; hot swaps from {root})"
    )
    # Everything built so far (the app, the policy, imported modules) lives as long as the process: move it out
    # of the cyclic garbage collector's reach, so that its full collections stay short instead of showing up as
    # latency spikes.
    gc.collect()
    gc.freeze()
    try:
        server.run(
            app,
            host=args.host,
            port=args.port,
            read_timeout_s=args.read_timeout,
            log_level=args.log_level,
            access_log=args.access_log,
        )
    finally:
        router.store.close()
    return 0
