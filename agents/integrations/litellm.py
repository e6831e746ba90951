"""Route a LiteLLM ``Router``'s requests with a learned policy, and log every decision and outcome in our store.

LiteLLM's two documented extension points, with their names:

- :class:`PolicyRoutingStrategy` is a ``litellm.types.router.CustomRoutingStrategyBase``: installed on a LiteLLM
  ``Router`` (:meth:`PolicyRoutingStrategy.install`: ``Router.register_plugin``, or
  ``Router.set_custom_routing_strategy`` on LiteLLM versions without it), it answers LiteLLM's
  ``async_get_available_deployment`` / ``get_available_deployment`` for every request. A request for a routing
  name (``model="router"``) is featurized from its messages with the policy's featurizer and routed by
  :meth:`OnlineRouter.route <agents.online.OnlineRouter.route>`, which logs the decision with its propensity (and
  the λ of a budget pacer); a request naming one of the policy's models is logged as a forced decision
  (propensity 1); requests for other model groups (embeddings, …) get one of that group's deployments, unlogged.
  The decision id goes into the request's ``metadata`` (``routing_decision_id``, with ``routing_model``,
  ``routing_propensity``, ``routing_policy_version``); LiteLLM fills the caller's own ``metadata`` dict with it.
- :class:`OutcomeLogger` is a ``litellm.integrations.custom_logger.CustomLogger`` (registered as a LiteLLM
  callback by :func:`install`): on each success it reads the decision id back from the call's metadata and records the
  outcome — USD cost (usage × the ``prices`` given for the model, else LiteLLM's ``response_cost``), latency and
  tokens. Quality comes from an ``evaluator`` (the decision is closed at once) or later from
  :meth:`OutcomeLogger.feedback` (either order: the first of outcome and quality waits for the other); the
  decision is then closed by :meth:`OnlineRouter.feedback` with that cost and latency, so the policy learns
  and the store holds them. Token counts are kept on the :class:`CallOutcome` (the decision store has no column
  for them yet).

Deployments map to the policy's models by ``model_name`` (``LiteLLMConfig.model_map`` renames). Example::

    import litellm
    from agents.integrations.litellm import install
    plugin = install(litellm_router, OnlineRouter.restore("runs/router.db"))   # strategy + logger
    md = {"routing_request_id": "req-1"}
    answer = await litellm_router.acompletion(model="router", messages=[...], metadata=md)
    plugin.logger.feedback_for_request("req-1", quality=1.0)                    # when the grade is known

Needs the ``litellm`` extra (``pip install 'routing-env[litellm]'``). LiteLLM fetches its model cost map from
the network at import unless ``LITELLM_LOCAL_MODEL_COST_MAP=True``; it reports a cost of 0 for models missing
from that map, which is why ``prices`` (or LiteLLM's per-deployment ``input_cost_per_token``) take precedence.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

try:
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.types.router import CustomRoutingStrategyBase
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agents.integrations.litellm needs LiteLLM: pip install 'routing-env[litellm]'"
    ) from exc

from agents.online.errors import DecisionNotFoundError
from agents.online.router import OnlineRouter
from agents.online.stores.base import Decision, Feedback
from routing_env.errors import ConfigurationError, ModelMismatchError

__all__ = [
    "DECISION_KEY",
    "REQUEST_KEY",
    "CallOutcome",
    "LiteLLMConfig",
    "LiteLLMPlugin",
    "OutcomeLogger",
    "PolicyRoutingStrategy",
    "install",
]

#: Request-metadata key holding the decision id the strategy logged (read back by the logger).
DECISION_KEY = "routing_decision_id"
#: Request-metadata key a caller may set: its idempotency key for the decision (see ``feedback_for_request``).
REQUEST_KEY = "routing_request_id"

_log = logging.getLogger(__name__)
Evaluator = Callable[[Sequence[Mapping[str, Any]], Any], float]


@dataclass(frozen=True)
class LiteLLMConfig:
    """How :class:`PolicyRoutingStrategy` reads LiteLLM requests (validated on construction).

    Attributes:
        route_names: the ``model`` names that ask for routing (default ``("router",)``); they must not be
            deployment names.
        model_map: policy model → LiteLLM deployment ``model_name`` where they differ (default: the same names).
        messages: the text featurized: ``"last_user"`` (the last user message; every message when none is from
            the user) or ``"all"`` (every message, joined by newlines).
    """

    route_names: tuple[str, ...] = ("router",)
    model_map: Mapping[str, str] = field(default_factory=dict)
    messages: Literal["last_user", "all"] = "last_user"

    def __post_init__(self) -> None:
        names = self.route_names
        if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigurationError(f"route_names must be a non-empty list of model names, got {names!r}")
        object.__setattr__(self, "route_names", tuple(names))
        if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in self.model_map.items()):
            raise ConfigurationError(
                f"model_map must map model names to deployment names, got {self.model_map!r}"
            )
        if self.messages not in ("last_user", "all"):
            raise ConfigurationError(f"messages must be 'last_user' or 'all', got {self.messages!r}")


@dataclass(frozen=True)
class CallOutcome:
    """What LiteLLM reported about the call that served a decision.

    Attributes:
        decision_id: the decision.
        model: the policy's name of the model called.
        litellm_call_id: LiteLLM's id of the call.
        cost: USD (``None``: neither prices nor a cost from LiteLLM); ``cost_source`` says which.
        input_tokens, output_tokens: the usage LiteLLM reported (``None`` without usage).
        latency_s: seconds from LiteLLM's start of the call to its end.
    """

    decision_id: str
    model: str
    litellm_call_id: str | None
    cost: float | None
    cost_source: Literal["prices", "litellm"] | None
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float | None


# ---------------------------------------------------------------------------------------------------- strategy
class PolicyRoutingStrategy(CustomRoutingStrategyBase):
    """A LiteLLM custom routing strategy that routes with ``online``'s policy (see the module docstring).

    Args:
        online: the :class:`~agents.online.OnlineRouter` serving a route policy with a featurizer (its own, or
            the router's ``featurizer=``).
        litellm_router: the ``litellm.Router`` whose deployments serve the policy's models.
        config: :class:`LiteLLMConfig` (default: route ``model="router"``, same names, last user message).

    Raises:
        ConfigurationError: a cascade policy, no featurizer, or a routing name that is also a deployment name.
        ModelMismatchError: a policy model without a deployment (the message lists the deployments there are).
    """

    def __init__(
        self, online: OnlineRouter, litellm_router: Any, config: LiteLLMConfig | None = None
    ) -> None:
        config = config or LiteLLMConfig()
        if online.kind != "route":
            raise ConfigurationError(
                "the LiteLLM strategy serves route policies (one model per request); a cascade needs several calls "
                "per request — serve it with the gateway"
            )
        if online.featurizer is None:
            raise ConfigurationError(
                "the LiteLLM strategy featurizes the request's messages: the policy carries no featurizer and the "
                "OnlineRouter was given none (OnlineRouter(..., featurizer=...))"
            )
        unknown = sorted(set(config.model_map) - set(online.models))
        if unknown:
            raise ModelMismatchError(
                f"model_map names {unknown}, which the policy {list(online.models)} lacks"
            )
        self.online = online
        self.litellm_router = litellm_router
        self.config = config
        self._deployment_name = {m: config.model_map.get(m, m) for m in online.models}
        self._policy_model = {v: k for k, v in self._deployment_name.items()}
        available = sorted({str(d.get("model_name")) for d in _deployments(litellm_router, None)})
        missing = sorted(m for m, name in self._deployment_name.items() if name not in available)
        if missing:
            raise ModelMismatchError(
                f"the policy's models {missing} have no LiteLLM deployment (model_name) in the router; it has "
                f"{available} (map names with LiteLLMConfig(model_map=...))"
            )
        taken = sorted(set(config.route_names) & set(available))
        if taken:
            raise ConfigurationError(
                f"route_names {taken} are deployment names of the router; pick routing names no deployment uses"
            )
        self._turn = itertools.count()

    def install(self) -> PolicyRoutingStrategy:
        """Make this the LiteLLM router's routing strategy (``register_plugin``, else the older
        ``set_custom_routing_strategy``); returns ``self``."""
        register = getattr(self.litellm_router, "register_plugin", None)
        if callable(register):
            register(self)
        else:
            self.litellm_router.set_custom_routing_strategy(self)
        return self

    async def async_get_available_deployment(  # type: ignore[override, unused-ignore]
        self, model: str, **request: Any
    ) -> dict[str, Any]:
        """LiteLLM's asynchronous pick (it passes ``messages``, ``input``, ``specific_deployment`` and
        ``request_kwargs`` by keyword): the same as :meth:`get_available_deployment`."""
        return self.get_available_deployment(model, **request)

    def get_available_deployment(  # type: ignore[override, unused-ignore]
        self,
        model: str,
        messages: list[dict[str, Any]] | None = None,
        input: str | list[Any] | None = None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """LiteLLM's pick: the deployment (a ``model_list`` entry) to call for this request, the decision logged
        first (see :meth:`pick`)."""
        return self.pick(model, messages, specific_deployment, request_kwargs)

    def pick(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]] | None,
        specific_deployment: bool | None = False,
        request_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Route one request for ``model`` and return the LiteLLM deployment (a ``model_list`` entry) to call.

        Raises:
            ModelMismatchError: ``model`` is neither a routing name nor a model group of the router.
            ConfigurationError: a routing name requested without chat messages.
        """
        kwargs = request_kwargs if request_kwargs is not None else {}
        metadata = kwargs.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
            kwargs["metadata"] = metadata
        if specific_deployment:
            deployment, name = self._specific(model)
            if name not in self._policy_model or messages is None:
                return deployment
            self._decide(messages, metadata, self._policy_model[name])
            return deployment
        if model in self.config.route_names or model in self._policy_model:
            if messages is None:
                raise ConfigurationError(
                    f"model {model!r} is routed by the policy, which reads chat messages; this request has none "
                    "(an embedding or text request): name a model group instead"
                )
            forced = None if model in self.config.route_names else self._policy_model[model]
            decision = self._decide(messages, metadata, forced)
            model = self._deployment_name[decision.model]
        deployments = _deployments(self.litellm_router, model)
        if not deployments:
            groups = sorted({str(d.get("model_name")) for d in _deployments(self.litellm_router, None)})
            raise ModelMismatchError(
                f"model {model!r} is neither a routing name {list(self.config.route_names)} nor a model group of "
                f"the router {groups}"
            )
        return deployments[next(self._turn) % len(deployments)]

    def _decide(
        self, messages: Sequence[Mapping[str, Any]], metadata: dict[str, Any], forced: str | None
    ) -> Decision:
        request_id = metadata.get(REQUEST_KEY)
        decision = self.online.route(
            prompt=prompt_text(messages, self.config.messages),
            request_id=None if request_id is None else str(request_id),
            allowed_models=None if forced is None else [forced],
        )
        metadata[DECISION_KEY] = decision.decision_id
        metadata["routing_model"] = decision.model
        metadata["routing_propensity"] = decision.propensity
        metadata["routing_policy_version"] = decision.policy_version
        return decision

    def _specific(self, model: str) -> tuple[dict[str, Any], str]:
        """The deployment a ``specific_deployment`` request names (by its id or its LiteLLM model string)."""
        for d in _deployments(self.litellm_router, None):
            info, params = d.get("model_info") or {}, d.get("litellm_params") or {}
            if model in (info.get("id"), params.get("model")):
                return d, str(d.get("model_name"))
        raise ModelMismatchError(
            f"specific deployment {model!r} is not a deployment id or model of the router"
        )


# ---------------------------------------------------------------------------------------------------- logger
class OutcomeLogger(CustomLogger):
    """A LiteLLM callback that records each routed call's outcome and closes its decision with the quality.

    Args:
        online: the :class:`~agents.online.OnlineRouter` whose decisions the strategy logged.
        prices: USD per 1M ``(input, output)`` tokens per policy model; the cost of a call is its usage × these
            when given for its model, else LiteLLM's ``response_cost``.
        evaluator: ``evaluator(messages, response) -> quality in [0, 1]``; when given, each decision is closed as
            soon as its call succeeds. Without it, quality comes from :meth:`feedback`.
        max_pending: outcomes (and early qualities) kept in memory while they wait for each other (the oldest
            are dropped, with a warning).

    Events for decisions of another store, and calls the strategy did not route, are ignored. A failed call
    leaves its decision open (LiteLLM retries pick again, as new decisions); it expires under the router's
    ``feedback_timeout_s``.
    """

    def __init__(
        self,
        online: OnlineRouter,
        *,
        prices: Mapping[str, tuple[float, float]] | None = None,
        evaluator: Evaluator | None = None,
        max_pending: int = 100_000,
    ) -> None:
        super().__init__()
        self.online = online
        self.prices = _check_prices(prices or {}, online.models)
        if evaluator is not None and not callable(evaluator):
            raise ConfigurationError(f"evaluator must be callable(messages, response), got {evaluator!r}")
        self.evaluator = evaluator
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(f"max_pending must be an integer ≥ 1, got {max_pending!r}")
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._waiting: OrderedDict[str, CallOutcome] = OrderedDict()  # outcomes waiting for their quality
        self._qualities: OrderedDict[str, float] = OrderedDict()  # qualities waiting for their outcome
        self._recent: OrderedDict[str, CallOutcome] = OrderedDict()  # the latest outcomes, for reading
        self.errors = 0

    # ---- LiteLLM's hooks
    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.record(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.record(kwargs, response_obj, start_time, end_time)

    # ---- recording
    def record(
        self, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any
    ) -> CallOutcome | None:
        """Record the outcome of one successful call (what LiteLLM's success hooks call); returns it, or ``None``
        for a call that is not one of this router's decisions. Never raises into LiteLLM: a failure (of the
        evaluator, or to store) is logged and counted in ``errors``, and the outcome waits for :meth:`feedback`."""
        decision_id = _metadata(kwargs).get(DECISION_KEY)
        if not isinstance(decision_id, str):
            return None
        try:
            decision = self.online.store.get_decision(decision_id)
        except DecisionNotFoundError:
            return None  # another router's decision
        outcome = self._outcome(decision, kwargs, response, start_time, end_time)
        with self._lock:
            _bounded_put(self._recent, decision_id, outcome, self.max_pending)
            quality = self._qualities.pop(decision_id, None)
            if quality is None and self.evaluator is None:
                _bounded_put(self._waiting, decision_id, outcome, self.max_pending, "outcome")
                return outcome
        try:
            if quality is None:
                assert self.evaluator is not None
                quality = _quality(self.evaluator(kwargs.get("messages") or [], response))
            self.online.feedback(decision_id, quality, cost=outcome.cost, latency_s=outcome.latency_s)
        except Exception as exc:  # a callback must not fail the caller's request
            with self._lock:
                self.errors += 1
                _bounded_put(self._waiting, decision_id, outcome, self.max_pending, "outcome")
            _log.warning("could not close decision %s with its outcome: %s", decision_id, exc)
        return outcome

    def _outcome(
        self, decision: Decision, kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any
    ) -> CallOutcome:
        tokens_in, tokens_out = _usage(response)
        cost: float | None = None
        source: Literal["prices", "litellm"] | None = None
        price = self.prices.get(decision.model)
        if price is not None and tokens_in is not None and tokens_out is not None:
            cost, source = (tokens_in * price[0] + tokens_out * price[1]) / 1e6, "prices"
        else:
            reported = kwargs.get("response_cost")
            if isinstance(reported, (int, float)) and math.isfinite(reported) and reported >= 0:
                cost, source = float(reported), "litellm"
        call_id = kwargs.get("litellm_call_id")
        return CallOutcome(
            decision_id=decision.decision_id,
            model=decision.model,
            litellm_call_id=None if call_id is None else str(call_id),
            cost=cost,
            cost_source=source,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            latency_s=_seconds(start_time, end_time),
        )

    # ---- quality
    def feedback(self, decision_id: str, quality: float) -> Feedback | None:
        """Give a decision its quality: it is closed with the call's recorded cost and latency, and the policy
        learns. Returns the stored feedback, or ``None`` when the call's outcome has not been logged yet (the
        decision is closed as soon as it is).

        Raises:
            ConfigurationError: quality outside [0, 1].
            DecisionNotFoundError: an id the store never issued.
            DecisionConflictError: the decision is already closed.
        """
        q = _quality(quality)
        decision = self.online.store.get_decision(decision_id)
        with self._lock:
            outcome = self._waiting.pop(decision.decision_id, None)
            if outcome is None and decision.status == "open":
                _bounded_put(self._qualities, decision.decision_id, q, self.max_pending, "quality")
                return None
        if outcome is None:  # closed already: the router names the conflict
            return self.online.feedback(decision.decision_id, q)
        return self.online.feedback(decision.decision_id, q, cost=outcome.cost, latency_s=outcome.latency_s)

    def feedback_for_request(self, request_id: str, quality: float) -> Feedback | None:
        """:meth:`feedback` for the decision made for the caller's ``metadata["routing_request_id"]``."""
        decision = self.online.store.find_request(str(request_id))
        if decision is None:
            raise DecisionNotFoundError(f"no decision was made for request id {request_id!r}")
        return self.feedback(decision.decision_id, quality)

    def outcome(self, decision_id: str) -> CallOutcome | None:
        """The recorded outcome of one of the latest ``max_pending`` calls (tokens included), if held."""
        with self._lock:
            return self._recent.get(decision_id)


class LiteLLMPlugin(NamedTuple):
    """The installed strategy and logger (see :func:`install`)."""

    strategy: PolicyRoutingStrategy
    logger: OutcomeLogger

    def uninstall(self) -> None:
        """Remove the logger from LiteLLM's callbacks (the strategy routes until another one is set)."""
        manager = getattr(litellm, "logging_callback_manager", None)
        if manager is not None:
            manager.remove_callback_from_all_lists(self.logger)
        elif self.logger in (litellm.callbacks or []):
            litellm.callbacks.remove(self.logger)


def install(
    litellm_router: Any,
    online: OnlineRouter,
    config: LiteLLMConfig | None = None,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    evaluator: Evaluator | None = None,
) -> LiteLLMPlugin:
    """Install a :class:`PolicyRoutingStrategy` on ``litellm_router`` and register an :class:`OutcomeLogger` as
    a LiteLLM callback (LiteLLM's callbacks are process-wide; :meth:`LiteLLMPlugin.uninstall` removes it)."""
    strategy = PolicyRoutingStrategy(online, litellm_router, config).install()
    logger = OutcomeLogger(online, prices=prices, evaluator=evaluator)
    manager = getattr(litellm, "logging_callback_manager", None)
    if manager is not None:
        manager.add_litellm_callback(logger)
    else:  # LiteLLM before its callback manager
        litellm.callbacks = [*(litellm.callbacks or []), logger]
    return LiteLLMPlugin(strategy, logger)


# ---------------------------------------------------------------------------------------------------- helpers
def prompt_text(
    messages: Sequence[Mapping[str, Any]], mode: Literal["last_user", "all"] = "last_user"
) -> str:
    """The text of chat ``messages`` to featurize: the last user message's, or every message's (joined by
    newlines). Content given as parts keeps its ``text`` parts."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ConfigurationError(f"messages must be a list of chat messages, got {type(messages).__name__}")
    texts = [(m.get("role"), _content_text(m.get("content"))) for m in messages if isinstance(m, Mapping)]
    if mode == "last_user":
        users = [t for role, t in texts if role == "user"]
        if users:
            return users[-1]
    return "\n".join(t for _, t in texts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return " ".join(
            str(p.get("text")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return ""


def _deployments(router: Any, model_name: str | None) -> list[dict[str, Any]]:
    """The router's deployments (``model_list`` entries) of ``model_name``, or all of them for ``None``."""
    registry = getattr(router, "registry", None)
    if callable(registry):
        found = registry().deployments(model_name)
    else:  # LiteLLM before the registry API
        found = [d for d in router.model_list if model_name is None or d.get("model_name") == model_name]
    return list(found or [])


def _metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request metadata LiteLLM hands a callback (``litellm_params.metadata`` for chat calls)."""
    params = kwargs.get("litellm_params") or {}
    for candidate in (params.get("metadata"), params.get("litellm_metadata"), kwargs.get("metadata")):
        if isinstance(candidate, Mapping) and DECISION_KEY in candidate:
            return candidate
    return {}


def _usage(response: Any) -> tuple[int | None, int | None]:
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, Mapping):
        usage = response.get("usage")
    if usage is None:
        return None, None

    def count(name: str) -> int | None:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        return int(value) if isinstance(value, (int, float)) and value >= 0 else None

    return count("prompt_tokens"), count("completion_tokens")


def _seconds(start: Any, end: Any) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        elapsed = (end - start).total_seconds()
    elif isinstance(start, (int, float)) and isinstance(end, (int, float)):
        elapsed = float(end) - float(start)
    else:
        return None
    return elapsed if math.isfinite(elapsed) and elapsed >= 0 else None


def _quality(value: Any) -> float:
    try:
        q = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"quality must be a number in [0, 1], got {value!r}") from None
    if not (math.isfinite(q) and 0.0 <= q <= 1.0):
        raise ConfigurationError(f"quality must be a number in [0, 1], got {value!r}")
    return q


def _check_prices(prices: Mapping[str, Any], models: Sequence[str]) -> dict[str, tuple[float, float]]:
    unknown = sorted(set(prices) - set(models))
    if unknown:
        raise ModelMismatchError(f"prices names {unknown}, which the policy {list(models)} lacks")
    out = {}
    for model, pair in prices.items():
        try:
            tokens_in, tokens_out = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"prices[{model!r}] must be (input, output) USD per 1M tokens, got {pair!r}"
            ) from None
        if not all(math.isfinite(v) and v >= 0 for v in (tokens_in, tokens_out)):
            raise ConfigurationError(f"prices[{model!r}] must be USD amounts ≥ 0, got {pair!r}")
        out[str(model)] = (tokens_in, tokens_out)
    return out


def _bounded_put(
    table: OrderedDict[str, Any], key: str, value: Any, limit: int, what: str | None = None
) -> None:
    """Put ``key`` last in ``table``, dropping the oldest entries beyond ``limit`` (with a warning naming
    ``what`` was dropped, unless ``what`` is ``None``: a cache)."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        dropped, _ = table.popitem(last=False)
        if what is not None:
            _log.warning(
                "dropped the %s held for decision %s: more than %d are waiting", what, dropped, limit
            )
