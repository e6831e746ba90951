"""The fake upstream of ``experiments/fake_upstream.py``: answers as the logs say (quality, tokens, log-probs),
grades answers with the logged signal, streams like OpenAI's API, and fails on request."""

from __future__ import annotations

import json
import math
import warnings

import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from experiments.fake_upstream import create_fake_app, quality_of
from routing_env import LoggedDataset


def test_answers_grades_streams_and_faults(sample: LoggedDataset) -> None:
    assert sample.prompts is not None and sample.signal is not None and sample.input_tokens is not None
    app = create_fake_app(sample, ["open-8b", "mini-frontier"])
    i, k = 17, sample.models.index("open-8b")
    messages = [{"role": "user", "content": str(sample.prompts[i])}]
    with TestClient(app) as c:
        r = c.post(
            "/v1/chat/completions", json={"model": "open-8b", "messages": messages, "logprobs": True}
        ).json()
        text = r["choices"][0]["message"]["content"]
        assert quality_of(text) == sample.quality[i, k] and r["model"] == "open-8b"
        assert r["usage"]["prompt_tokens"] == sample.input_tokens[i, k]
        lps = [t["logprob"] for t in r["choices"][0]["logprobs"]["content"]]
        assert math.exp(sum(lps) / len(lps)) == pytest.approx(sample.signal[i, k], rel=1e-12)
        grade = c.post(
            "/v1/chat/completions",
            json={"model": "mini-frontier", "messages": [{"role": "user", "content": f"Grade: {text}"}]},
        ).json()["choices"][0]["message"]["content"]
        assert float(grade) == sample.signal[i, k]  # the graded model's logged signal, exactly
        body = {
            "model": "open-8b",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        events = [e for e in c.post("/v1/chat/completions", json=body).text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]) == text
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == r["usage"]
        assert (
            c.post("/v1/chat/completions", json={"model": "small-3b", "messages": messages}).status_code
            == 404
        )
        c.post("/fake/faults", json={"fail_next": 2, "status": 502})
        statuses = [
            c.post("/v1/chat/completions", json={"model": "open-8b", "messages": messages}).status_code
        ]
        statuses += [
            c.post("/v1/chat/completions", json={"model": "open-8b", "messages": messages}).status_code
        ]
        statuses += [
            c.post("/v1/chat/completions", json={"model": "open-8b", "messages": messages}).status_code
        ]
        assert statuses == [502, 502, 200]
        assert c.get("/fake/stats").json()["served"] == {"open-8b": 3, "mini-frontier": 1}
