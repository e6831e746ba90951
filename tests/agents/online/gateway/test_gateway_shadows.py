"""Shadows in the gateway config: registered at start-up, scored on the gateway's decisions, kept by a restart,
and a name the store holds with another directory refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.online.gateway import GatewayConfig, create_gateway_app
from routing_env import LoggedDataset
from routing_env.errors import ConfigurationError
from tests.agents.online.gateway.servers import model_entries


def _config(sample: LoggedDataset, tmp_path: Path, policy: Path, shadows: dict[str, str]) -> GatewayConfig:
    urls = {m: "http://127.0.0.1:9" for m in sample.models}
    return GatewayConfig.model_validate(
        {
            "models": model_entries(sample, urls),
            "policy": str(policy),
            "store": str(tmp_path / "g.db"),
            "shadows": shadows,
        }
    )


def test_config_shadows_score_the_gateways_decisions_and_survive_a_restart(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    config = _config(sample, tmp_path, policy_dir, {"same-policy": str(policy_dir)})
    app = create_gateway_app(config)
    shadows = app.state.service.shadows
    router = app.gateway.router
    assert [(r.name, r.status) for r in shadows.records()] == [("same-policy", "active")]
    decisions = [router.route(prompt=str(p)) for p in sample.prompts[:5]]  # type: ignore[index]
    shadows.flush()
    for d in decisions:
        router.feedback(d.decision_id, 0.5, cost=0.0)
    rows = shadows.store.shadow_traffic("same-policy")
    assert [r.decision.decision_id for r in rows] == [d.decision_id for d in decisions]
    for r in rows:  # the shadow is the live policy itself: the same distribution
        assert r.probabilities.tolist() == pytest.approx(r.decision.probabilities.tolist(), abs=1e-12)
    shadows.close()
    router.store.close()

    again = create_gateway_app(config)
    assert [r.name for r in again.state.service.shadows.records()] == ["same-policy"]
    again.state.service.shadows.close()
    again.gateway.router.store.close()
    moved = _config(sample, tmp_path, policy_dir, {"same-policy": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="registered in the store with"):
        create_gateway_app(moved)


def test_shadow_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    from agents.online.gateway.config import load_config

    file = tmp_path / "gw.yaml"
    file.write_text(
        "models: [{name: a, base_url: 'http://127.0.0.1:9/v1', input_price: 0, output_price: 0}]\npolicy: p\nstore: g.db\nshadows: {cand: runs/c}\n"
    )
    assert load_config(file).shadows == {"cand": str(tmp_path / "runs/c")}
    file.write_text(
        "models: [{name: a, base_url: 'http://127.0.0.1:9/v1', input_price: 0, output_price: 0}]\npolicy: p\nstore: g.db\nshadows: {a/b: c}\n"
    )
    with pytest.raises(ConfigurationError, match="shadows"):
        load_config(file)


def test_a_config_canary_serves_its_share_under_its_own_version(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    urls = {m: "http://127.0.0.1:9" for m in sample.models}
    values = {
        "models": model_entries(sample, urls),
        "policy": str(policy_dir),
        "store": str(tmp_path / "g.db"),
    }
    with pytest.raises(ValidationError, match="go together"):
        GatewayConfig.model_validate({**values, "canary": 0.3})
    app = create_gateway_app(
        GatewayConfig.model_validate({**values, "canary": 0.3, "canary_policy": str(policy_dir)})
    )
    router = app.gateway.router
    assert router.canary is not None and router.canary.version == "canary-1"
    versions = [router.route(prompt=str(p)).policy_version for p in sample.prompts[:200]]  # type: ignore[index]
    assert 0.15 < versions.count("canary-1") / len(versions) < 0.45 and set(versions) == {"v1", "canary-1"}
    events = app.state.service.shadows.store.serving_events()
    assert [(e.event, e.candidate_version, e.split) for e in events] == [("canary_start", "canary-1", 0.3)]
    app.state.service.shadows.close()
    router.store.close()


@pytest.mark.parametrize(("epsilon", "warned"), [(0.0, True), (0.1, False)])
def test_the_gateway_warns_at_start_up_about_a_deterministic_policy(
    sample: LoggedDataset,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    epsilon: float,
    warned: bool,
) -> None:
    import json

    import uvicorn

    from agents.cli import main
    from experiments.fake_upstream import text_policy

    policy = text_policy(sample, tmp_path / "policy", n_train=300, epsilon=epsilon)
    urls = {m: "http://127.0.0.1:9" for m in sample.models}
    config = {"models": model_entries(sample, urls), "policy": str(policy), "store": str(tmp_path / "g.db")}
    (tmp_path / "gw.json").write_text(json.dumps(config))
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: served.append(app))
    assert main(["gateway", "--config", str(tmp_path / "gw.json")]) == 0
    assert len(served) == 1
    err = capsys.readouterr().err
    assert (
        "routing-env gateway: warning: the live policy LinUCB (version 'v1') is deterministic" in err
    ) is warned
    served[0].gateway.router.store.close()  # type: ignore[attr-defined]
