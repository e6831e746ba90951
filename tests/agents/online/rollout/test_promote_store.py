"""``routing-env promote --store`` on either store (SQLite file, PostgreSQL database) with no server running:
exit codes, the swap the next server resumes, and the history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.cli import main
from agents.online import OnlineRouter, open_store
from tests.agents.online.rollout import policies as P


def test_promote_on_a_store_refuses_then_promotes_and_keeps_the_history(
    store_location: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    P.better().save(tmp_path / "better")
    P.worse().save(tmp_path / "worse")
    router = OnlineRouter(P.live(), store_location)
    rng = np.random.default_rng(7)
    for _ in range(1100):
        x = rng.normal(size=2)
        d = router.route(x)
        router.feedback(
            d.decision_id, float(np.clip(P.quality(x)[0, d.action] + rng.normal(scale=0.1), 0, 1))
        )
    router.store.close()
    args = ["promote", "--store", store_location, "--candidate"]
    assert main([*args, str(tmp_path / "worse")]) == 1
    assert "refuse: the candidate is worse" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "better"), "--margin", "0.01"]) == 0
    assert "promoted: the store now serves version 'v2'" in capsys.readouterr().out
    assert main(["promote", "--store", store_location, "--history"]) == 0
    history = capsys.readouterr().out
    assert "refused (worse)" in history and "promoted to v2" in history and "--margin 0.01" in history
    resumed = OnlineRouter.restore(open_store(store_location))
    try:
        assert resumed.version == "v2"
        x = np.array([[1.0, 0.0]])
        np.testing.assert_array_equal(
            resumed.policy.action_probabilities(x), P.better().action_probabilities(x)
        )
    finally:
        resumed.store.close()
