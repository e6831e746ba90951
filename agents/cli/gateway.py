"""``routing-env gateway``: an OpenAI-compatible proxy that routes each request with a learned policy.

Clients call ``POST /v1/chat/completions`` with ``model="router"`` (or ``"router-<λ>"``, or a configured model's
name); the gateway routes, calls the model (failing over when it is down, or running a cascade), returns its
answer with the ``x-routing-*`` headers and logs every decision and call in the store. The online router's API
(``/v1/feedback``, ``/v1/decisions/{id}``, ``/healthz``, ``/metrics``, admin) is served on the same port.

Every scalar key of the config file can also be given as a flag (``--cost-weight 0.3`` sets ``cost_weight``);
flags win over the file, and both are validated together. A new store starts from the config's policy; an existing
one resumes from its last checkpoint plus the feedback logged after it.
"""

from __future__ import annotations

import argparse
import gc
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    try:
        from agents.online.gateway.config import flag_fields

        fields = flag_fields()
    except ImportError:  # no serve extra: run() says so
        fields = {}
    p = sub.add_parser(
        "gateway",
        help="serve an OpenAI-compatible gateway that routes, calls the model, fails over and learns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="the gateway's YAML or JSON config file")
    for name, help_text in fields.items():
        p.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE", help=help_text
        )
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("routing-env gateway needs the serve extra: pip install 'routing-env[serve]'", file=sys.stderr)
        return 2
    from agents.online.gateway import create_gateway_app, load_config
    from agents.online.gateway.config import flag_fields

    config = load_config(args.config, **{name: getattr(args, name, None) for name in flag_fields()})
    app = create_gateway_app(config)
    router = app.gateway.router
    warning = router.exploration_warning()
    if warning:
        print(f"routing-env gateway: warning: {warning}", file=sys.stderr, flush=True)
    print(
        f"routing-env gateway: version {router.version!r} ({router.kind} over {list(router.models)}) on "
        f"http://{config.host}:{config.port} (store {config.store})",
        file=sys.stderr,
        flush=True,
    )
    # Everything built so far lives as long as the process: keep it out of the cyclic collector's full passes.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        workers=1,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0
