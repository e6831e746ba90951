"""The OpenAI chat-completions wire format as the gateway reads and rewrites it.

The request is validated (:class:`ChatRequest`: the fields the gateway reads are typed and checked, every other
field passes through to the upstream untouched), the routed model's name replaces ``model``, and the answer goes
back unchanged except for ``model`` — plus what the gateway asked for on its own behalf taken out again: the
``logprobs`` a cascade needs, and the usage chunk of a stream (the gateway sets ``stream_options.include_usage``
to learn the cost of a streamed answer, and removes the usage from what the client sees unless it asked too).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.online.gateway.config import ROUTER_NAME


class _Open(BaseModel):
    # Unknown fields pass through to the upstream; the known ones are type-checked without coercion.
    model_config = ConfigDict(extra="allow", strict=True)


class ContentPart(_Open):
    type: str = Field(min_length=1, max_length=64)
    text: str | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatRequest(_Open):
    """``POST /v1/chat/completions``: ``model`` is ``"router"``, ``"router-<λ>"`` or a configured model's name."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=100_000)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None


class BadRequest(Exception):
    """A client's request the gateway refuses: ``status`` (4xx) and an OpenAI-style error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return error_body(str(self), "invalid_request_error", param=self.param, code=self.code)


def error_body(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_request(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The body as a dict (what is forwarded) and as a validated :class:`ChatRequest`.

    Raises:
        BadRequest: not a JSON object, a field of the wrong type or out of range (400, naming the field).
    """
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(400, f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        return body, ChatRequest.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:10])
        raise BadRequest(400, f"invalid chat completion request: {detail}", param=first) from None


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` asks for: the router (with its λ, or ``cost_weight`` for ``router-<λ>``), or
    one configured model (a pass-through, logged as a forced decision)."""

    routed: bool
    cost_weight: float | None = None
    model: str | None = None


def resolve_target(name: str, models: tuple[str, ...]) -> Target:
    """The :class:`Target` of ``model`` = ``name``.

    Raises:
        BadRequest: 404 for a name that is neither a router name nor a configured model.
    """
    if name == ROUTER_NAME:
        return Target(routed=True)
    if name.startswith(ROUTER_NAME + "-"):
        text = name[len(ROUTER_NAME) + 1 :]
        try:
            lam = float(text)
        except ValueError:
            lam = math.nan
        if not (math.isfinite(lam) and lam >= 0):
            raise BadRequest(
                404,
                f"model {name!r}: 'router-<λ>' takes a cost weight λ ≥ 0 (e.g. 'router-0.5'), got {text!r}",
                param="model",
                code="model_not_found",
            )
        return Target(routed=True, cost_weight=lam)
    if name in models:
        return Target(routed=False, model=name)
    raise BadRequest(
        404,
        f"model {name!r} does not exist here: use 'router', 'router-<λ>' or one of {list(models)}",
        param="model",
        code="model_not_found",
    )


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if p.text is not None)


def query_text(request: ChatRequest, mode: Literal["last_user", "all"]) -> str:
    """The text the policy routes on: the last user message's, or every message's joined by newlines.

    Raises:
        BadRequest: the request has no user message.
    """
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise BadRequest(400, "messages must hold at least one message with role 'user'", param="messages")
    if mode == "last_user":
        return _text(users[-1].content)
    return "\n".join(t for t in (_text(m.content) for m in request.messages) if t)


# ---------------------------------------------------------------------------------------------------- answers
@dataclass
class AnswerInfo:
    """What the gateway reads from an answer: the usage, the first choice's text and its token log-probs."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    text: str = ""
    logprobs: list[float] = field(default_factory=list)

    def read_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.input_tokens = _count(usage.get("prompt_tokens"))
            self.output_tokens = _count(usage.get("completion_tokens"))

    def mean_logprob(self) -> float | None:
        """The mean token log-probability of the first choice (``None`` when the upstream sent none)."""
        values = [v for v in self.logprobs if math.isfinite(v)]
        return sum(values) / len(values) if values else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read_logprobs(choice: dict[str, Any], into: list[float]) -> None:
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if isinstance(content, list):
        into.extend(
            float(t["logprob"])
            for t in content
            if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))
        )


def rewrite_completion(raw: bytes, model: str, keep_logprobs: bool) -> tuple[bytes, AnswerInfo]:
    """A non-streamed answer with ``model`` set (and the log-probs dropped unless the client asked for them).

    Raises:
        ValueError: the upstream's answer is not a chat completion object.
    """
    payload = json.loads(raw)
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        raise ValueError("the upstream's answer is not a chat completion (no 'choices' list)")
    info = AnswerInfo()
    info.read_usage(payload.get("usage"))
    for choice in payload["choices"]:
        if not isinstance(choice, dict):
            continue
        if choice.get("index", 0) == 0:
            message = choice.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            info.text = content if isinstance(content, str) else ""
            _read_logprobs(choice, info.logprobs)
        if not keep_logprobs and "logprobs" in choice:
            choice["logprobs"] = None
    payload["model"] = model
    return json.dumps(payload).encode(), info


class EventRewriter:
    """Rewrite a streamed answer (server-sent events) chunk by chunk as it arrives.

    Each ``data:`` event's chunk gets ``model`` set; log-probs are dropped unless the client asked for them, and
    the usage (``usage: null`` in every chunk, the final usage-only chunk) unless the client asked for it. The
    ``data: [DONE]`` event is held back: :attr:`done` tells whether it arrived, and the caller sends it once the
    call is logged. ``feed`` returns the bytes to send now.
    """

    def __init__(self, model: str, keep_logprobs: bool, keep_usage: bool) -> None:
        self.model = model
        self.keep_logprobs = keep_logprobs
        self.keep_usage = keep_usage
        self.info = AnswerInfo()
        self.done = False
        self._buffer = b""
        self._parts: list[str] = []

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        if b"\r" in self._buffer:  # CRLF line ends, perhaps split between two reads
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        out = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            rewritten = self._event(event)
            if rewritten is not None:
                out.append(rewritten + b"\n\n")
        return b"".join(out)

    def text(self) -> str:
        return "".join(self._parts)

    def _event(self, event: bytes) -> bytes | None:
        lines = event.split(b"\n")
        data = [ln[5:].lstrip(b" ") for ln in lines if ln.startswith(b"data:")]
        if not data:
            return event  # comments, retry:, id: lines — passed through
        joined = b"\n".join(data)
        if joined.strip() == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(joined)
        except ValueError:
            return event
        if not isinstance(chunk, dict):
            return event
        self._read(chunk)
        if not self.keep_usage and "usage" in chunk:
            if chunk.get("choices") == [] and chunk.get("usage") is not None:
                return None  # the usage-only chunk the gateway asked for
            del chunk["usage"]
        chunk["model"] = self.model
        others = [ln for ln in lines if not ln.startswith(b"data:")]
        return b"\n".join([*others, b"data: " + json.dumps(chunk).encode()])

    def _read(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage") is not None:
            self.info.read_usage(chunk["usage"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) == 0:
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(piece, str):
                    self._parts.append(piece)
                _read_logprobs(choice, self.info.logprobs)
            if not self.keep_logprobs and "logprobs" in choice:
                choice["logprobs"] = None

    def finish(self) -> AnswerInfo:
        """The answer's usage, text and log-probs (call when the stream has ended)."""
        self.info.text = self.text()
        return self.info
