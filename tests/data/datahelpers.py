"""Helpers shared by the data-layer tests."""

from __future__ import annotations

import numpy as np

from routing_env.data import LoggedDataset


def _same(a: np.ndarray | None, b: np.ndarray | None, name: str) -> None:
    assert (a is None) == (b is None), f"{name}: one side is None"
    if a is None or b is None:
        return
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    if a.dtype.kind in "fc":
        np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
    else:
        assert a.tolist() == b.tolist(), f"{name} differs"


def assert_datasets_equal(a: LoggedDataset, b: LoggedDataset, meta: bool = True) -> None:
    """Exact equality of every array, name, price card (and provenance note when ``meta``)."""
    assert a.models == b.models
    _same(a.query_ids, b.query_ids, "query_ids")
    for name in (
        "quality",
        "cost",
        "observed",
        "features",
        "latency",
        "signal",
        "input_tokens",
        "output_tokens",
        "prompts",
        "tasks",
        "logged_action",
        "propensity",
    ):
        _same(getattr(a, name), getattr(b, name), name)
    assert a.feature_names == b.feature_names
    assert dict(a.model_cards) == dict(b.model_cards)
    if meta:
        assert dict(a.meta) == dict(b.meta)
