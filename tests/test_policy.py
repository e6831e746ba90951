"""The policy directory format: kinds are registered names, never module paths taken from the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agents import LinUCB
from routing_env.data import load_sample
from routing_env.errors import PolicyFormatError
from routing_env.policy import load_policy, read_policy_dir


def _saved(tmp_path: Path) -> Path:
    return (
        LinUCB(seed=0)
        .fit(load_sample().subset_models(load_sample().models[:3]), cost_weight=0.2)
        .save(tmp_path / "p")
    )


def _rewrite_kind(path: Path, kind: object) -> None:
    doc = json.loads((path / "policy.json").read_text())
    doc["kind"] = kind
    (path / "policy.json").write_text(json.dumps(doc))


def test_kind_is_the_registered_name(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    assert json.loads((path / "policy.json").read_text())["kind"] == "LinUCB"
    assert read_policy_dir(path, expect=LinUCB)[0] == "LinUCB"


def test_legacy_module_path_kinds_still_load(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    original = load_policy(path)
    _rewrite_kind(path, "agents.bandits.LinUCB")
    loaded = load_policy(path)
    assert isinstance(loaded, LinUCB)
    x = load_sample().features[:5]
    assert (loaded.action_probabilities(x) == original.action_probabilities(x)).all()


@pytest.mark.parametrize(
    "kind", ["agents.cli.__main__.X", "os.system", "agents.routers.bandits.LinUCB", "json"]
)
def test_a_kind_never_imports_a_module_named_by_the_file(tmp_path: Path, kind: str) -> None:
    path = _saved(tmp_path)
    _rewrite_kind(path, kind)
    sys.modules.pop("agents.cli.__main__", None)
    with pytest.raises(PolicyFormatError, match="unknown policy kind"):
        load_policy(path)
    assert "agents.cli.__main__" not in sys.modules


def test_a_kind_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _rewrite_kind(path, ["LinUCB"])
    with pytest.raises(PolicyFormatError, match="'kind' must be a string"):
        load_policy(path)
