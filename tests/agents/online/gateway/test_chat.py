"""The chat-completions format as the gateway reads and rewrites it: the text routed on, the router names, and
answers rewritten without touching what the client asked for."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pydantic")

from agents.online.gateway.chat import (
    BadRequest,
    EventRewriter,
    parse_request,
    query_text,
    resolve_target,
    rewrite_completion,
)

MODELS = ("small", "large")


def _request(messages: list[dict[str, object]]) -> bytes:
    return json.dumps({"model": "router", "messages": messages}).encode()


def test_the_text_routed_on_is_the_last_user_message_or_every_message() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": None},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url"},
                {"type": "text", "text": "part"},
            ],
        },
    ]
    body, request = parse_request(_request(messages))
    assert body["messages"] == messages  # what is forwarded is what came in
    assert query_text(request, "last_user") == "second\npart"
    assert query_text(request, "all") == "be brief\nfirst question\nsecond\npart"
    _, system_only = parse_request(_request([{"role": "system", "content": "x"}]))
    with pytest.raises(BadRequest, match="at least one message with role 'user'"):
        query_text(system_only, "all")


def test_router_names_and_pass_throughs() -> None:
    assert resolve_target("router", MODELS).routed and resolve_target("router", MODELS).cost_weight is None
    assert resolve_target("router-0.25", MODELS).cost_weight == 0.25
    assert resolve_target("router-1e-3", MODELS).cost_weight == 0.001
    large = resolve_target("large", MODELS)
    assert (large.routed, large.model) == (False, "large")
    for bad in ("router-", "router--1", "router-inf", "router-nan", "huge"):
        with pytest.raises(BadRequest) as err:
            resolve_target(bad, MODELS)
        assert err.value.status == 404 and err.value.code == "model_not_found"


def test_unknown_fields_pass_through_and_known_ones_are_typed_strictly() -> None:
    body, request = parse_request(
        json.dumps(
            {
                "model": "router",
                "messages": [{"role": "user", "content": "q"}],
                "tools": [{"x": 1}],
                "seed": 3,
            }
        ).encode()
    )
    assert body["tools"] == [{"x": 1}] and request.model == "router"
    for field, value in (("n", "2"), ("max_tokens", 1.5), ("logprobs", 1), ("top_p", "0.5")):
        with pytest.raises(BadRequest, match=field) as err:
            parse_request(
                json.dumps(
                    {"model": "router", "messages": [{"role": "user", "content": "q"}], field: value}
                ).encode()
            )
        assert err.value.status == 400 and err.value.param == field


def test_a_completion_keeps_everything_but_model_and_unrequested_logprobs() -> None:
    lp = {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]}
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "model": "upstream-name",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ab"},
                "logprobs": lp,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        "system_fingerprint": "fp",
    }
    out, info = rewrite_completion(json.dumps(answer).encode(), "small", keep_logprobs=False)
    got = json.loads(out)
    assert got["model"] == "small" and got["choices"][0]["logprobs"] is None
    assert {k: v for k, v in got.items() if k not in ("model", "choices")} == {
        k: v for k, v in answer.items() if k not in ("model", "choices")
    }
    assert (info.input_tokens, info.output_tokens, info.text, info.mean_logprob()) == (7, 2, "ab", -1.0)
    kept, _ = rewrite_completion(json.dumps(answer).encode(), "small", keep_logprobs=True)
    assert json.loads(kept)["choices"][0]["logprobs"] == lp
    with pytest.raises(ValueError, match="not a chat completion"):
        rewrite_completion(b'{"error": "x"}', "small", keep_logprobs=False)


def _event(chunk: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_streams_are_rewritten_event_by_event_across_arbitrary_splits() -> None:
    chunks = [
        {
            "model": "u",
            "choices": [
                {"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"logprob": -1.0}]}}
            ],
            "usage": None,
        },
        {
            "model": "u",
            "choices": [
                {"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [{"logprob": -3.0}]}}
            ],
            "usage": None,
        },
        {"model": "u", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    ]
    raw = b": keep-alive comment\r\n\r\n" + b"".join(_event(c) for c in chunks) + b"data: [DONE]\n\n"
    for keep_usage in (False, True):
        rewriter = EventRewriter("small", keep_logprobs=False, keep_usage=keep_usage)
        out = b"".join(rewriter.feed(raw[i : i + 7]) for i in range(0, len(raw), 7))  # split mid-event
        events = [e for e in out.split(b"\n\n") if e]
        assert events[0] == b": keep-alive comment" and rewriter.done
        sent = [json.loads(e.removeprefix(b"data: ")) for e in events[1:]]
        assert all(c["model"] == "small" for c in sent)
        assert all(ch["logprobs"] is None for c in sent for ch in c["choices"])
        if keep_usage:
            assert len(sent) == 3 and sent[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2}
        else:
            assert len(sent) == 2 and all("usage" not in c for c in sent)
        info = rewriter.finish()
        assert (info.text, info.input_tokens, info.output_tokens, info.mean_logprob()) == (
            "Hello",
            4,
            2,
            -2.0,
        )
    assert b"[DONE]" not in out  # held back until the call is logged
