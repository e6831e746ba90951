"""The gateway's request flow: route, call the model, fail over or cascade, log the calls, answer, evaluate.

One chat request becomes one decision of the :class:`~agents.online.OnlineRouter`, logged before any model is
called, and one :class:`~agents.online.stores.base.Call` per upstream attempt, logged (with its tokens, USD cost
and latency) before the answer is sent — for a stream, before its closing ``data: [DONE]``. So every answered
request is in the store with its cost, and nothing the client saw as complete is missing after a crash.

- **Route decisions**: the model drawn is called; if it stays down after its retries it goes into cool-down and
  :meth:`OnlineRouter.fail_over` draws again among the models left, logging the model served with its propensity
  under the renormalised distribution (why this keeps off-policy evaluation on the store correct:
  :mod:`agents.online.failover`). A pass-through (``model`` = a configured name) is a forced decision of
  propensity 1 and never switches model: it answers 502 when that model is down.
- **Cascade decisions**: the chain's models are called cheapest first; after each answer its signal (see
  :class:`~agents.online.gateway.config.CascadeSettings`) goes to :meth:`OnlineRouter.observe`, which accepts it or
  names the next model; each step is logged with its cost (the call's, plus a grading call's), and
  ``x-routing-propensity`` is the product of the steps' propensities (the probability of the path taken). Models
  in cool-down cut the chain. If an escalation fails after its retries the answer already received is served; its decision then
  records a "call" step that produced nothing better, which the cascade policy learns as the continuation's value.
- **Quality**: later by ``POST /v1/feedback`` (the cost defaults to the logged calls'), or from the ``evaluator``
  given to the app, run after the answer is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from agents.online.gateway.chat import (
    AnswerInfo,
    BadRequest,
    ChatRequest,
    EventRewriter,
    Target,
    error_body,
    parse_request,
    query_text,
    resolve_target,
    rewrite_completion,
)
from agents.online.gateway.config import GatewayConfig
from agents.online.gateway.http1 import CONNECTION_ERRORS
from agents.online.gateway.upstream import CoolDown, Reply, Upstream
from agents.online.http.commit import GroupCommit, StoreCommitError
from agents.online.router import OnlineRouter
from agents.online.stores.base import Call, Decision
from routing_env.errors import ModelMismatchError, RoutingEnvError

log = logging.getLogger("routing_env.gateway")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Exchange:
    """One answered request, as the evaluator sees it.

    Attributes:
        decision_id: the decision to give quality for.
        model: the model whose answer was returned.
        request: the client's request body (its ``messages``, ...).
        answer: the text of the answer's first choice.
        input_tokens, output_tokens: the answering call's usage (``None`` when the upstream reported none).
        cost: USD of every call the decision made.
        latency_s: seconds from receiving the request to the end of the answer.
    """

    decision_id: str
    model: str
    request: Mapping[str, Any]
    answer: str
    input_tokens: int | None
    output_tokens: int | None
    cost: float
    latency_s: float


#: ``evaluator(exchange) -> quality in [0, 1]`` (or ``None``: no feedback); plain functions run in a worker thread,
#: coroutine functions on the event loop.
Evaluator = Callable[[Exchange], float | Awaitable[float | None] | None]
#: ``verifier(messages, answer, model) -> grade in [0, 1]``: a cascade's signal (runs on the event loop; may be
#: a coroutine function).
Verifier = Callable[[Sequence[Mapping[str, Any]], str, str], float | Awaitable[float]]


@dataclass
class Answer:
    """What the gateway sends back: a status, headers, and a body or a stream of body chunks."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None


_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _headers(d: Decision, model: str, propensity: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-routing-decision-id", d.decision_id.encode()),
        (b"x-routing-model", model.encode()),
        (b"x-routing-propensity", repr(float(propensity)).encode()),
        (b"x-routing-policy-version", d.policy_version.encode()),
    ]


def _error(status: int, message: str, kind: str, d: Decision | None = None) -> Answer:
    headers = [_JSON] if d is None else [_JSON, *_headers(d, d.model, d.propensity)]
    return Answer(status, headers, error_body(message, kind))


def total_cost(calls: Sequence[Call]) -> float:
    """USD of ``calls`` (the calls without usage count 0)."""
    return float(sum(c.cost for c in calls if c.cost is not None))


def _describe(calls: Sequence[Call]) -> str:
    return ", ".join(
        f"{c.model} ({c.status if c.http_status is None else f'HTTP {c.http_status}'})" for c in calls
    )


class Gateway:
    """The request flow of ``POST /v1/chat/completions`` over one :class:`OnlineRouter` (see the module docs).

    Every router call runs on the event loop inside the service's group commit, like the router's own endpoints.
    """

    def __init__(
        self,
        config: GatewayConfig,
        router: OnlineRouter,
        committer: GroupCommit,
        upstreams: dict[str, Upstream],
        *,
        evaluator: Evaluator | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.committer = committer
        self.upstreams = upstreams
        self.evaluator = evaluator
        self.verifier = verifier
        self.cooldown = CoolDown(config.cooldown_s)
        self.models = tuple(m.name for m in config.models)
        self.calls_by_status: Counter[tuple[str, str]] = Counter()
        self.fail_overs = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ entry point
    async def chat(self, raw: bytes) -> Answer:
        """Answer one ``POST /v1/chat/completions`` body."""
        started = time.perf_counter()
        try:
            body, request = parse_request(raw)
            target = resolve_target(request.model, self.models)
            text = query_text(request, self.config.featurize)
        except BadRequest as exc:
            return Answer(exc.status, [_JSON], exc.body())
        try:
            d = await self._route(text, target)
        except StoreCommitError as exc:
            return _error(503, str(exc), "server_error")
        except RoutingEnvError as exc:
            return _error(400, str(exc), "invalid_request_error")
        try:
            if d.kind == "route":
                return await self._serve_route(d, body, request, target, started)
            return await self._serve_cascade(d, body, request, started)
        except StoreCommitError as exc:
            return _error(503, str(exc), "server_error", d)

    async def _route(self, text: str, target: Target) -> Decision:
        router = self.router
        allowed: list[str] | None
        if target.routed:
            allowed = self.cooldown.allowed(router.models)
            if router.kind == "cascade" and allowed is not None and router.models[0] not in allowed:
                allowed = None  # the chain must start with its first model: try it rather than refuse
        else:
            allowed = [str(target.model)]
        lam = target.cost_weight
        return await self.committer.run(
            lambda: router.route(prompt=text, allowed_models=allowed, cost_weight=lam)
        )

    def _payload(self, body: dict[str, Any], up: Upstream, *, stream: bool, logprobs: bool) -> bytes:
        """The client's body for ``up``: its model name, and what the gateway needs (usage of a stream,
        log-probs of a cascade step)."""
        p = dict(body)
        p["model"] = up.model.served_name
        if stream:
            options = p.get("stream_options")
            p["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        if logprobs:
            p["logprobs"] = True
        return json.dumps(p).encode()

    def _calls(
        self,
        d: Decision,
        reply: Reply,
        first: int,
        *,
        step: int = 0,
        info: AnswerInfo | None = None,
        purpose: Literal["answer", "verify"] = "answer",
    ) -> list[Call]:
        """The :class:`Call` records of ``reply``'s attempts, numbered from ``first`` (usage on the ok one)."""
        out = []
        cfg = self.config.model(reply.attempts[0].model) if reply.attempts else None
        for j, a in enumerate(reply.attempts):
            tokens_in = tokens_out = None
            cost = None
            if a.status == "ok" and info is not None and cfg is not None:
                tokens_in, tokens_out = info.input_tokens, info.output_tokens
                if tokens_in is not None and tokens_out is not None:
                    cost = cfg.cost(tokens_in, tokens_out)
            self.calls_by_status[(a.model, a.status)] += 1
            out.append(
                Call(
                    d.decision_id,
                    first + j,
                    step,
                    a.model,
                    purpose,
                    a.started,
                    a.status,
                    a.http_status,
                    tokens_in,
                    tokens_out,
                    cost,
                    a.latency_s,
                )
            )
        return out

    async def _log(self, calls: list[Call], then: Callable[[], Any] | None = None) -> Any:
        """Commit ``calls`` (and run the router call ``then`` in the same group); its result."""
        store = self.router.store

        def work() -> Any:
            store.insert_calls(calls)
            return None if then is None else then()

        return await self.committer.run(work)

    # ------------------------------------------------------------------ route decisions
    async def _serve_route(
        self, d: Decision, body: dict[str, Any], request: ChatRequest, target: Target, started: float
    ) -> Answer:
        stream = bool(request.stream)
        calls: list[Call] = []
        failed: list[str] = []
        while True:
            up = self.upstreams.get(d.model)
            if up is None:
                return _error(503, f"policy version {d.policy_version!r} routes to {d.model!r}, which the gateway "
                              "config does not define", "server_error", d)  # fmt: skip
            reply = await up.call(
                self._payload(body, up, stream=stream, logprobs=bool(request.logprobs)), stream=stream
            )
            if reply.status == "ok":
                break
            new = self._calls(d, reply, len(calls))
            calls.extend(new)
            if reply.status == "rejected":
                await self._log(new)
                return Answer(
                    reply.http_status or 400, [_JSON, *_headers(d, d.model, d.propensity)], reply.body
                )
            self.cooldown.mark_down(d.model)
            failed.append(d.model)
            if not target.routed:
                await self._log(new)
                return _error(502, f"model {d.model!r} did not answer: {_describe(new)}", "upstream_error", d)
            await self._log(new)
            decision_id, tried = d.decision_id, tuple(failed)
            try:
                d = await self.committer.run(partial(self.router.fail_over, decision_id, tried))
            except ModelMismatchError:
                return _error(502, f"no model could answer: {_describe(calls)}", "upstream_error", d)
            self.fail_overs += 1
        headers = _headers(d, d.model, d.propensity)
        if stream:
            return Answer(200, _SSE + headers, stream=self._stream(d, reply, request, body, calls, started))
        try:
            out, info = rewrite_completion(reply.body, d.model, bool(request.logprobs))
        except ValueError as exc:
            reply.attempts[-1].status = "error"  # an answer that is not a chat completion is a failed call
            await self._log(self._calls(d, reply, len(calls)))
            return _error(502, f"model {d.model!r} answered something else: {exc}", "upstream_error", d)
        new = self._calls(d, reply, len(calls), info=info)
        await self._log(new)
        self._evaluate(d, body, info, [*calls, *new], started)
        return Answer(200, [_JSON, *headers], out)

    async def _stream(
        self,
        d: Decision,
        reply: Reply,
        request: ChatRequest,
        body: dict[str, Any],
        earlier: list[Call],
        started: float,
    ) -> AsyncGenerator[bytes, None]:
        """The upstream's events rewritten as they arrive; ``[DONE]`` only after the call is logged."""
        options = request.stream_options
        rewriter = EventRewriter(d.model, bool(request.logprobs), bool(options and options.include_usage))
        broken = False
        try:
            async for chunk in reply.events():
                out = rewriter.feed(chunk)
                if out:
                    yield out
        except (asyncio.TimeoutError, *CONNECTION_ERRORS):
            broken = True
        finally:
            reply.finish("error" if broken else None)
            info = rewriter.finish()
            new = self._calls(d, reply, len(earlier), info=info)
            await self._log(new)
        if broken:
            yield (
                b"data: " + error_body(f"model {d.model!r} broke off its answer", "upstream_error") + b"\n\n"
            )
            return
        if rewriter.done:
            yield b"data: [DONE]\n\n"
        self._evaluate(d, body, info, [*earlier, *new], started)

    # ------------------------------------------------------------------ cascade decisions
    async def _serve_cascade(
        self, d: Decision, body: dict[str, Any], request: ChatRequest, started: float
    ) -> Answer:
        stream = bool(request.stream)
        settings = self.config.cascade
        logprobs = settings.signal != "verifier" or bool(request.logprobs)
        calls: list[Call] = []
        served: tuple[str, list[bytes], AnswerInfo] | None = None
        propensity = d.propensity
        model, step = d.model, 0
        while True:
            up = self.upstreams.get(model)
            if up is None:
                return _error(503, f"the cascade calls {model!r}, which the gateway config does not define",
                              "server_error", d)  # fmt: skip
            reply = await up.call(self._payload(body, up, stream=stream, logprobs=logprobs), stream=stream)
            if reply.status != "ok":
                new = self._calls(d, reply, len(calls), step=step)
                calls.extend(new)
                await self._log(new)
                if reply.status != "rejected":
                    self.cooldown.mark_down(model)
                if served is not None:
                    break
                if reply.status == "rejected":
                    return Answer(
                        reply.http_status or 400, [_JSON, *_headers(d, model, propensity)], reply.body
                    )
                return _error(502, f"model {model!r} did not answer: {_describe(new)}", "upstream_error", d)
            try:
                chunks, info = await self._collect(reply, model, request, stream)
            except ValueError as exc:
                reply.attempts[-1].status = "error"
                await self._log(self._calls(d, reply, len(calls), step=step))
                return _error(502, f"model {model!r} answered something else: {exc}", "upstream_error", d)
            new = self._calls(d, reply, len(calls), step=step, info=info)
            signal, graded = await self._signal(d, model, request, info, step, len(calls) + len(new))
            new.extend(graded)
            calls.extend(new)
            if signal is None:
                await self._log(new)
                return _error(502, f"model {model!r} returned no logprobs, and the cascade's signal is the mean token "
                              "log-probability (set cascade.signal: verifier for upstreams without them)",
                              "upstream_error", d)  # fmt: skip
            served = (model, chunks, info)
            observe = partial(self.router.observe, d.decision_id, signal, cost=total_cost(new))
            obs = await self._log(new, observe)
            propensity *= obs.propensity
            if obs.action == "accept":
                break
            model, step = obs.model, step + 1
        model, chunks, info = served
        self._evaluate(d, body, info, calls, started, model=model)
        headers = _headers(d, model, propensity)
        if stream:
            return Answer(200, _SSE + headers, stream=_replay([*chunks, b"data: [DONE]\n\n"]))
        return Answer(200, [_JSON, *headers], chunks[0])

    async def _collect(
        self, reply: Reply, model: str, request: ChatRequest, stream: bool
    ) -> tuple[list[bytes], AnswerInfo]:
        """A cascade step's whole answer (rewritten for the client) and what it says, before it is accepted."""
        if not stream:
            out, info = rewrite_completion(reply.body, model, bool(request.logprobs))
            return [out], info
        options = request.stream_options
        rewriter = EventRewriter(model, bool(request.logprobs), bool(options and options.include_usage))
        chunks = []
        try:
            async for chunk in reply.events():
                out = rewriter.feed(chunk)
                if out:
                    chunks.append(out)
        except (asyncio.TimeoutError, *CONNECTION_ERRORS) as exc:
            reply.finish("error")
            raise ValueError(f"the stream broke off ({type(exc).__name__})") from None
        reply.finish()
        return chunks, rewriter.finish()

    async def _signal(
        self, d: Decision, model: str, request: ChatRequest, info: AnswerInfo, step: int, first: int
    ) -> tuple[float | None, list[Call]]:
        """The cascade signal of ``model``'s answer, and the grading calls it took."""
        settings = self.config.cascade
        if settings.signal != "verifier":
            mean = info.mean_logprob()
            if mean is None:
                return None, []
            return (mean if settings.signal == "logprob" else math.exp(mean)), []
        messages = [m.model_dump() for m in request.messages]
        if self.verifier is not None:
            grade = self.verifier(messages, info.text, model)
            if inspect.isawaitable(grade):
                grade = await grade
            return _grade(float(grade)), []
        assert settings.verifier_model is not None  # checked when the app is built
        up = self.upstreams[settings.verifier_model]
        question = query_text(request, "last_user")
        grading = {
            "model": up.model.served_name,
            "messages": [
                {"role": "system", "content": settings.verifier_prompt},
                {"role": "user", "content": f"Question:\n{question}\n\nAnswer:\n{info.text}"},
            ],
            "temperature": 0,
            "max_tokens": 8,
        }
        reply = await up.call(json.dumps(grading).encode(), stream=False)
        grade_info: AnswerInfo | None = None
        grade = 0.0
        if reply.status == "ok":
            try:
                _, grade_info = rewrite_completion(reply.body, up.model.name, False)
                match = _NUMBER.search(grade_info.text)
                grade = _grade(float(match.group())) if match else 0.0
            except ValueError:
                grade_info = None
        if grade_info is None or not _NUMBER.search(grade_info.text):
            log.warning(
                "the verifier %s gave no grade for decision %s; escalating", up.model.name, d.decision_id
            )
        return grade, self._calls(d, reply, first, step=step, info=grade_info, purpose="verify")

    # ------------------------------------------------------------------ quality
    def _evaluate(
        self,
        d: Decision,
        body: dict[str, Any],
        info: AnswerInfo,
        calls: Sequence[Call],
        started: float,
        model: str | None = None,
    ) -> None:
        if self.evaluator is None:
            return
        exchange = Exchange(
            decision_id=d.decision_id,
            model=model or d.model,
            request=body,
            answer=info.text,
            input_tokens=info.input_tokens,
            output_tokens=info.output_tokens,
            cost=total_cost(calls),
            latency_s=time.perf_counter() - started,
        )
        task = asyncio.get_running_loop().create_task(self._feedback(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _feedback(self, ex: Exchange) -> None:
        evaluator = self.evaluator
        assert evaluator is not None
        try:
            if inspect.iscoroutinefunction(evaluator):
                quality = await evaluator(ex)
            else:
                quality = await asyncio.to_thread(evaluator, ex)
                if inspect.isawaitable(quality):
                    quality = await quality
            if quality is None:
                return
            q = float(quality)
            await self.committer.run(lambda: self.router.feedback(ex.decision_id, q, ex.cost, ex.latency_s))
        except Exception:  # an evaluator's failure never fails a request; the decision stays open
            log.exception("evaluating decision %s failed", ex.decision_id)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) for the evaluations still running (at shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    def prometheus(self) -> str:
        """The gateway's counters in Prometheus' text format: upstream calls by model and status, fail-overs."""
        lines = [
            "# HELP routing_env_gateway_calls_total Upstream calls by model and status.",
            "# TYPE routing_env_gateway_calls_total counter",
        ]
        for (model, status), n in sorted(self.calls_by_status.items()):
            lines.append(
                f'routing_env_gateway_calls_total{{model={json.dumps(model)},status="{status}"}} {n}'
            )
        lines += [
            "# HELP routing_env_gateway_fail_overs_total Decisions re-routed after their model failed.",
            "# TYPE routing_env_gateway_fail_overs_total counter",
            f"routing_env_gateway_fail_overs_total {self.fail_overs}",
        ]
        return "\n".join(lines) + "\n"


def _grade(value: float) -> float:
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


async def _replay(chunks: list[bytes]) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        yield chunk
