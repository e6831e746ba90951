"""``routing-env serve``: run the online router's HTTP service on one uvicorn worker.

A new store starts from ``--policy`` (a saved policy directory); an existing store resumes from its last checkpoint
plus the feedback logged after it, so restarting the same command after a crash loses nothing acknowledged.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import TYPE_CHECKING

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
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--cost-weight", type=float, default=None, help="λ (default: the policy's own, else 0)")
    p.add_argument("--cost-scale", type=float, default=None, help="USD per unit of λ (default: the policy's)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="save the policy every N updates")
    p.add_argument("--feedback-timeout", type=float, default=None, help="seconds before a decision expires")
    p.add_argument(
        "--default-quality",
        type=float,
        default=None,
        help="quality applied to expired decisions (default none)",
    )
    p.add_argument("--seed", type=int, default=0, help="root seed of the routing draws")
    p.add_argument(
        "--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability (FULL: fsync)"
    )
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger requests get 413")
    p.add_argument("--policy-root", help="only allow hot swaps to policy directories inside this one")
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def build_router(args: argparse.Namespace) -> OnlineRouter:
    """The :class:`~agents.online.OnlineRouter` the arguments describe (restored when the store has a checkpoint)."""
    from agents.online import OnlineRouter, open_store
    from routing_env.errors import ConfigurationError
    from routing_env.policy import load_policy

    store = open_store(args.store, synchronous=args.synchronous)
    options = {
        "cost_weight": args.cost_weight,
        "cost_scale": args.cost_scale,
        "checkpoint_every": args.checkpoint_every,
        "feedback_timeout_s": args.feedback_timeout,
        "default_quality": args.default_quality,
        "seed": args.seed,
    }
    if store.latest_checkpoint() is not None:
        router = OnlineRouter.restore(store, **options)
        if args.policy:
            print(
                f"routing-env serve: {store.location} already serves version {router.version!r}; resuming it and "
                f"ignoring --policy {args.policy} (hot swap with POST /v1/policy)",
                file=sys.stderr,
            )
        return router
    if not args.policy:
        raise ConfigurationError(
            f"the store {store.location} is new: give --policy DIR, a saved policy directory"
        )
    return OnlineRouter(load_policy(args.policy), store, version=args.version, **options)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("routing-env serve needs the serve extra: pip install 'routing-env[serve]'", file=sys.stderr)
        return 2
    from agents.online import create_app

    router = build_router(args)
    app = create_app(router, max_body_bytes=args.max_body_bytes, policy_root=args.policy_root)
    print(
        f"routing-env serve: version {router.version!r} on http://{args.host}:{args.port} "
        f"(store {router.store.location})",
        file=sys.stderr,
        flush=True,
    )
    # Everything built so far (the app, the policy, imported modules) lives as long as the process: move it out
    # of the cyclic garbage collector's reach, so that its full collections stay short instead of showing up as
    # latency spikes.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, log_level=args.log_level, access_log=args.access_log
    )
    return 0
