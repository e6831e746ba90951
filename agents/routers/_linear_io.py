"""Saving and restoring the linear bandits (:mod:`agents.routers._linear`): ``policy.json`` + ``arrays.npz``, no
pickle. Everything that determines future behaviour is kept — weights, exact sums, the pending buffer and the
generator state — so loading and replaying the same calls reproduces the same state bit for bit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.routers._common import reading_saved, restore_basics, rng_state, write_router_dir
from routing_env.errors import PolicyFormatError

if TYPE_CHECKING:
    from agents.routers._linear import _LinearBandit

__all__ = ["load_bandit", "save_bandit"]


def save_bandit(bandit: _LinearBandit, path: str | Path) -> Path:
    """Write ``bandit`` to directory ``path`` and return it."""
    root = Path(path)
    config: dict[str, Any] = {
        "hyperparameters": bandit._hyperparameters(),
        "models": list(bandit.models),
        "n_features": bandit.n_features,
        "cost_only_columns": list(bandit.cost_only_columns_),
        "mode": bandit.mode,
        "cost_scale_": bandit.cost_scale_,
        "n_updates": bandit.n_updates,
        "rng_state": rng_state(bandit._rng),
        "w_cached": None if math.isnan(bandit._w_cached) else bandit._w_cached,
        "has_featurizer": bandit.featurizer is not None,
        "chosen": {"ridge_": bandit.ridge_, "cv_score_": bandit.cv_score_, **bandit._chosen()},
    }
    arrays: dict[str, np.ndarray] = {"prior_q": bandit._mq, "prior_c": bandit._mc}
    if bandit._unit is not None:
        assert bandit._shift is not None
        arrays.update(shift=bandit._shift, unit=bandit._unit)
    if bandit._alloc_done:
        n = bandit._buf_n
        arrays |= {
            "A": bandit._A,
            "Ainv": bandit._Ainv,
            "bq": bandit._bq,
            "bc": bandit._bc,
            "tq": bandit._tq,
            "tc": bandit._tc,
            "teff": bandit._teff,
            "counts": bandit._counts,
            "buf_x": bandit._buf_x[:n],
            "buf_a": bandit._buf_a[:n],
            "buf_q": bandit._buf_q[:n],
            "buf_c": bandit._buf_c[:n],
        }
    return write_router_dir(root, bandit, config, arrays)


def load_bandit(cls: type[_LinearBandit], path: str | Path) -> Any:
    """Restore a bandit of class ``cls`` written by :func:`save_bandit`."""
    with reading_saved(path, cls) as (root, config, arrays):
        obj = cls(**config["hyperparameters"], models=tuple(config["models"]))
        restore_basics(obj, root, config)
        chosen = dict(config.get("chosen", {}))
        obj.ridge_ = float(chosen.pop("ridge_", obj.ridge_))
        score = chosen.pop("cv_score_", None)
        obj.cv_score_ = None if score is None else float(score)
        obj._restore_chosen(chosen)
        if "unit" in arrays:
            obj._shift, obj._unit = np.asarray(arrays["shift"]), np.asarray(arrays["unit"])
        if "prior_q" in arrays:
            obj._mq, obj._mc = np.array(arrays["prior_q"]), np.array(arrays["prior_c"])
        if config["n_features"] is not None:
            obj._allocate(int(config["n_features"]))
            obj.mode = config["mode"]
            for name in ("A", "Ainv", "bq", "bc", "tq", "tc", "counts"):
                # In reward-only mode θ is the stacked score weights, so this also fills them.
                target = getattr(obj, "_" + name)
                if arrays[name].shape != target.shape:
                    raise PolicyFormatError(
                        f"array {name!r} has shape {arrays[name].shape}, expected {target.shape}"
                    )
                target[...] = arrays[name]
            if obj.mode == "outcomes":
                obj._tq = np.array(arrays["tq"], dtype=np.float64)
                obj._teff[...] = arrays["teff"]
            n = int(arrays["buf_x"].shape[0])
            obj._buf_x[:n] = arrays["buf_x"]
            obj._buf_a[:n] = arrays["buf_a"]
            obj._buf_q[:n] = arrays["buf_q"]
            obj._buf_c[:n] = arrays["buf_c"]
            obj._buf_n = n
            w = config.get("w_cached")
            obj._w_cached = math.nan if w is None else float(w)
        obj.n_updates = int(config["n_updates"])
    return obj
