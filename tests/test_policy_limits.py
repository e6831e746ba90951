"""The policy directory reader refuses hostile or corrupt files before reading their state: sizes declared by the
files, the width the config declares, finite values — each a PolicyFormatError, never a crash or a blow-up."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agents import LinUCB
from agents.routers.cascades import ThresholdCascade
from agents.routers.predictive import KNNRouter
from routing_env import LoggedDataset
from routing_env.data import make_synthetic
from routing_env.errors import ConfigurationError, PolicyFormatError
from routing_env.policy import PolicyLimits, load_policy, npz_members, read_policy_dir


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=120, models=3, n_features=4, seed=5)


@pytest.fixture
def saved(data: LoggedDataset, tmp_path: Path) -> Path:
    return LinUCB(seed=0).fit(data, cost_weight=0.3).save(tmp_path / "p")


def _edit_config(path: Path, **changes: object) -> None:
    doc = json.loads((path / "policy.json").read_text())
    doc["config"].update(changes)
    (path / "policy.json").write_text(json.dumps(doc))


def _write_npy_member(npz: Path, name: str, header: dict[str, object], body: bytes) -> None:
    """Rewrite ``npz`` with one member ``name.npy`` holding ``header`` (a forged .npy header) and ``body``."""
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z, z.open(name + ".npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(body)


def test_a_pickle_as_policy_json_is_refused(saved: Path) -> None:
    (saved / "policy.json").write_bytes(pickle.dumps({"kind": "LinUCB"}))
    with pytest.raises(PolicyFormatError, match="not UTF-8 JSON text"):
        load_policy(saved)


def test_deeply_nested_json_is_refused(saved: Path) -> None:
    (saved / "policy.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(PolicyFormatError, match="nests deeper than 64 levels"):
        load_policy(saved)
    (saved / "policy.json").write_text(json.dumps({"kind": "LinUCB", "config": {"a": [[[[[[0]]]]]]}}))
    with pytest.raises(PolicyFormatError, match="nests deeper than 4 levels"):
        read_policy_dir(saved, limits=PolicyLimits(max_json_depth=4))


def test_an_oversized_policy_json_is_refused_before_it_is_read(saved: Path) -> None:
    with pytest.raises(PolicyFormatError, match="above the 100-byte limit"):
        read_policy_dir(saved, limits=PolicyLimits(max_json_bytes=100))


@pytest.mark.parametrize("width", [-5, 1.5, True, "8"])
def test_a_malformed_width_is_refused(saved: Path, width: object) -> None:
    _edit_config(saved, n_features=width)
    with pytest.raises(PolicyFormatError, match="n_features must be null or an integer ≥ 0"):
        load_policy(saved)


def test_a_width_implying_more_state_than_the_limit_is_refused_before_allocation(saved: Path) -> None:
    _edit_config(saved, n_features=200_000)  # K·(d+1)²·8 bytes = 960 GB of per-model matrices
    with pytest.raises(PolicyFormatError, match=r"n_features=200000 over 3 models implies \d+ bytes"):
        load_policy(saved)


def test_models_must_be_unique_names(saved: Path) -> None:
    _edit_config(saved, models=["a", "a", "b"])
    with pytest.raises(PolicyFormatError, match="models must be unique"):
        load_policy(saved)


def test_an_npy_header_declaring_1e15_elements_is_refused_before_allocation(saved: Path) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**15,)}
    _write_npy_member(saved / "arrays.npz", "A", header, b"\0" * 64)
    with pytest.raises(PolicyFormatError, match=r"array 'A' declares shape \(1000000000000000,\)"):
        load_policy(saved)


def test_a_header_that_lies_about_its_data_is_refused(saved: Path) -> None:
    header = {"descr": "<f8", "fortran_order": False, "shape": (4,)}
    _write_npy_member(saved / "arrays.npz", "A", header, b"\0" * 8)
    with pytest.raises(PolicyFormatError, match="declares 32 bytes of data, but its member holds 8"):
        load_policy(saved)


def test_a_zip_bomb_is_refused_from_its_declared_size(saved: Path) -> None:
    bomb = saved / "arrays.npz"
    n = 8 << 20  # 64 MiB of zeros compress to ~64 KiB
    header = {"descr": "<f8", "fortran_order": False, "shape": (n,)}
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("A.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        chunk = b"\0" * (1 << 20)
        for _ in range(n * 8 // len(chunk)):
            f.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    limits = PolicyLimits(max_array_bytes=16 << 20)
    with pytest.raises(PolicyFormatError, match="above the 16777216-byte limit per array"):
        npz_members(bomb, limits)
    with pytest.raises(PolicyFormatError, match="above the 16777216-byte limit per array"):
        read_policy_dir(saved, limits=limits)


def test_object_arrays_and_non_zip_files_are_refused(saved: Path) -> None:
    np.save(saved / "x.npy", np.array([object()], dtype=object), allow_pickle=True)
    (saved / "x.npy").rename(saved / "arrays.npz")
    with pytest.raises(PolicyFormatError, match="not a zip archive"):
        load_policy(saved)
    np.savez(saved / "arrays.npz", A=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PolicyFormatError, match="holds Python objects"):
        load_policy(saved)


def test_nan_weights_are_refused(saved: Path) -> None:
    _, _, arrays = read_policy_dir(saved)
    arrays["tq"] = arrays["tq"].copy()
    arrays["tq"][0, 0] = np.nan
    np.savez(saved / "arrays.npz", **arrays)
    with pytest.raises(PolicyFormatError, match="array 'tq' holds 1 NaN or infinite values"):
        load_policy(saved)


def test_loader_errors_on_bad_content_are_policy_format_errors(saved: Path) -> None:
    _edit_config(saved, hyperparameters={"alpha": "lots"})
    with pytest.raises(PolicyFormatError, match="is not a valid LinUCB"):
        load_policy(saved)


def test_declared_non_finite_arrays_still_load(data: LoggedDataset, tmp_path: Path) -> None:
    frame = data.to_frame()
    hidden = np.random.default_rng(0).random(len(frame)) < 0.3
    frame.loc[hidden, "quality"] = np.nan  # partial logs: unobserved outcomes are NaN
    knn = KNNRouter(n_neighbors=3).fit(LoggedDataset.from_frame(frame), cost_weight=0.3)
    loaded = load_policy(knn.save(tmp_path / "knn"))
    np.testing.assert_array_equal(
        loaded.action_probabilities(data.features[:5]), knn.action_probabilities(data.features[:5])
    )
    cascade = ThresholdCascade(seed=0).fit(data, cost_weight=0.3)
    assert isinstance(load_policy(cascade.save(tmp_path / "cascade")), ThresholdCascade)


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_json_depth must be an integer ≥ 1"):
        PolicyLimits(max_json_depth=0)
