"""An OpenAI-compatible fake LLM server that answers from a logged dataset (tests and the gateway benchmark).

``POST /v1/chat/completions`` finds the query whose logged prompt is the request's last user message and answers
as the requested model did in the logs, so a gateway's decisions can be scored exactly:

- the answer's text names the model, the query and the model's logged quality on it
  (``"[small-3b] answer to query q17: quality 0.25"``; :func:`quality_of` reads it back);
- ``usage`` carries the logged input and output tokens of that model on that query;
- with ``logprobs: true`` every token of the answer has log-probability ``log(signal)``, the model's logged signal,
  so the mean token log-probability is ``log(signal)`` exactly;
- a request whose last user message quotes one of these answers is a grading request: the reply is the graded
  model's logged signal on that query (a verifier that knows the logs);
- ``stream: true`` answers with server-sent events, one chunk per word, and a final usage chunk when the request
  asks for it (``stream_options.include_usage``), like OpenAI's API.

An unknown prompt maps to a query by a CRC-32 of its text (any text gets a deterministic answer). Faults for tests:
``POST /fake/faults`` with ``{"fail_next": n, "status": 503, "delay_s": 0.5}`` fails the next ``n`` requests with
that status and delays every answer by ``delay_s`` (a gateway's timeout);
``GET /fake/stats`` counts the requests answered per model and lists the ``Authorization`` headers received.

    python experiments/fake_upstream.py --port 9001 [--data sample|FILE] [--models small-3b,open-8b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from routing_env import LoggedDataset
from routing_env.data import load_sample

ANSWER = re.compile(
    r"\[(?P<model>[^\]\n]+)\] answer to query (?P<query>\S+): quality (?P<quality>[0-9.eE+-]+)"
)


def quality_of(answer: str) -> float:
    """The logged quality a fake answer reports (``ValueError`` when ``answer`` is not one)."""
    match = ANSWER.search(answer)
    if match is None:
        raise ValueError(f"not an answer of the fake upstream: {answer[:80]!r}")
    return float(match.group("quality"))


@dataclass
class Faults:
    """What the fake does wrong: fail the next ``fail_next`` requests with ``status``, delay every answer by
    ``delay_s`` seconds."""

    fail_next: int = 0
    status: int = 503
    delay_s: float = 0.0


class FakeLLM:
    """The logs behind the fake: a query per prompt, and each model's outcome on it."""

    def __init__(self, dataset: LoggedDataset, models: Sequence[str] | None = None) -> None:
        if dataset.prompts is None:
            raise ValueError("the fake upstream answers from prompts, and the dataset has none")
        self.data = dataset
        self.models = tuple(models) if models is not None else dataset.models
        unknown = sorted(set(self.models) - set(dataset.models))
        if unknown:
            raise ValueError(f"models {unknown} are not in the dataset's {list(dataset.models)}")
        self.column = {m: dataset.models.index(m) for m in self.models}
        self.query = {str(p): i for i, p in enumerate(dataset.prompts)}
        self.ids = {str(q): i for i, q in enumerate(dataset.query_ids)}
        self.faults = Faults()
        self.served: Counter[str] = Counter()
        self.authorizations: set[str] = set()  # the Authorization headers seen (tests check what was sent)

    def row(self, text: str) -> int:
        i = self.query.get(text)
        return i if i is not None else zlib.crc32(text.encode()) % self.data.n_queries

    def outcome(self, i: int, model: str) -> tuple[float, int, int, float]:
        """``(quality, input tokens, output tokens, signal)`` of ``model`` (any model of the logs) on query ``i``."""
        d, k = self.data, self.data.models.index(model)
        quality = float(d.quality[i, k])
        tokens_in = int(d.input_tokens[i, k]) if d.input_tokens is not None else 50
        tokens_out = int(d.output_tokens[i, k]) if d.output_tokens is not None else 20
        signal = float(d.signal[i, k]) if d.signal is not None else 0.5
        return quality, tokens_in, tokens_out, signal

    def answer(self, body: dict[str, Any]) -> tuple[str, int, int, float]:
        """The answer text, token counts and signal for a chat request's body."""
        model = body["model"]
        text = _last_user_text(body.get("messages", []))
        graded = ANSWER.search(text)
        if (
            graded is not None
            and graded.group("query") in self.ids
            and graded.group("model") in self.data.models
        ):
            i = self.ids[graded.group("query")]
            _, tokens_in, _, signal = self.outcome(i, graded.group("model"))
            return repr(signal), tokens_in, 1, 1.0
        i = self.row(text)
        quality, tokens_in, tokens_out, signal = self.outcome(i, model)
        return (
            f"[{model}] answer to query {self.data.query_ids[i]}: quality {quality!r}",
            tokens_in,
            tokens_out,
            signal,
        )


def _last_user_text(messages: Any) -> str:
    for m in reversed(messages if isinstance(messages, list) else []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)


def _logprobs(words: list[str], signal: float) -> dict[str, Any]:
    lp = math.log(max(signal, 1e-12))
    return {
        "content": [{"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": []} for w in words]
    }


def create_fake_app(dataset: LoggedDataset, models: Sequence[str] | None = None) -> FastAPI:
    """The fake's FastAPI app answering as ``models`` (default: every model of ``dataset``) did in its logs."""
    fake = FakeLLM(dataset, models)
    app = FastAPI(title="fake OpenAI-compatible upstream")
    app.state.fake = fake

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        fake.authorizations.add(request.headers.get("authorization", ""))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict) or body.get("model") not in fake.column:
            model = body.get("model") if isinstance(body, dict) else None
            return _error(404, f"the model {model!r} does not exist on this server")
        if fake.faults.delay_s:
            await asyncio.sleep(fake.faults.delay_s)
        if fake.faults.fail_next > 0:
            fake.faults.fail_next -= 1
            return _error(fake.faults.status, "fault injected")
        fake.served[body["model"]] += 1
        text, tokens_in, tokens_out, signal = fake.answer(body)
        usage = {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        created = int(time.time())
        cid = f"chatcmpl-{zlib.crc32(text.encode()):08x}"
        want_logprobs = bool(body.get("logprobs"))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _chunks(cid, created, body["model"], text, signal, usage, want_logprobs, include_usage),
                media_type="text/event-stream",
            )
        message = {"role": "assistant", "content": text}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": _logprobs(text.split(" "), signal) if want_logprobs else None,
            "finish_reason": "stop",
        }
        payload = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [choice],
            "usage": usage,
        }
        return Response(json.dumps(payload), media_type="application/json")

    @app.post("/fake/faults")
    async def set_faults(request: Request) -> dict[str, Any]:
        given = json.loads(await request.body())
        fake.faults = Faults(**given)
        return {"ok": True}

    @app.get("/fake/stats")
    async def stats() -> dict[str, Any]:
        return {"served": dict(fake.served), "authorizations": sorted(fake.authorizations)}

    return app


async def _chunks(
    cid: str,
    created: int,
    model: str,
    text: str,
    signal: float,
    usage: dict[str, int],
    logprobs: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    words = text.split(" ")
    yield event(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
    )
    for j, word in enumerate(words):
        piece = word if j == 0 else " " + word
        lp = _logprobs([piece], signal) if logprobs else None
        yield event([{"index": 0, "delta": {"content": piece}, "logprobs": lp, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
    if include_usage:
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


def text_policy(
    dataset: LoggedDataset, path: str | Path, *, n_train: int = 1500, epsilon: float = 0.1
) -> Path:
    """A LinUCB (λ = 0.5) fitted on text features of the first ``n_train`` queries' prompts and saved with its
    featurizer to ``path``: a policy a gateway in front of this fake can route the prompts with."""
    from agents.routers import LinUCB
    from routing_env.data import TextFeaturizer

    if dataset.prompts is None:
        raise ValueError("a text policy needs prompts, and the dataset has none")
    train = dataset.select(np.arange(n_train))
    prompts = [str(p) for p in train.prompts]  # type: ignore[union-attr]
    featurizer = TextFeaturizer(n_components=16, seed=0).fit(prompts)
    featured = train.with_features(featurizer.transform(prompts))
    policy = LinUCB(alpha=0.3, epsilon=epsilon, seed=0).fit(featured, cost_weight=0.5, featurizer=featurizer)
    return policy.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data", default="sample", help="'sample' (the bundled sample) or a logged-data file")
    p.add_argument(
        "--models", default=None, help="comma-separated models to serve (default: all of the data's)"
    )
    args = p.parse_args()
    import uvicorn

    dataset = load_sample() if args.data == "sample" else LoggedDataset.read(args.data)
    models = None if args.models is None else [m for m in args.models.split(",") if m]
    app = create_fake_app(dataset, models)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
