"""The gateway's config: one typed model read from YAML or JSON, flags on top, a clear error per bad key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pydantic")
pytest.importorskip("yaml")

from agents.online.gateway.config import GatewayConfig, flag_fields, is_loopback, load_config
from routing_env.errors import ConfigurationError

MODEL = {"name": "a", "base_url": "http://127.0.0.1:9/v1", "input_price": 0.1, "output_price": 0.4}


def _write_yaml(path: Path, values: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values))
    return path


def test_yaml_and_json_read_the_same_config_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    values = {"models": [MODEL], "policy": "../runs/linucb", "store": "gw.db", "cost_weight": 0.5}
    a = load_config(_write_yaml(tmp_path / "conf" / "gw.yaml", values))
    (tmp_path / "conf" / "gw.json").write_text(json.dumps(values))
    b = load_config(tmp_path / "conf" / "gw.json")
    assert a == b
    assert a.policy == str(tmp_path / "conf" / "../runs/linucb") and a.store == str(
        tmp_path / "conf" / "gw.db"
    )
    assert a.models[0].served_name == "a" and a.models[0].cost(1_000_000, 500_000) == pytest.approx(0.3)
    assert (a.host, a.port, a.featurize, a.cascade.signal) == ("127.0.0.1", 8000, "last_user", "logprob")


def test_flags_override_the_file_and_are_validated_with_it(tmp_path: Path) -> None:
    path = _write_yaml(tmp_path / "gw.yaml", {"models": [MODEL], "policy": "p", "store": "s.db", "port": 1})
    cfg = load_config(path, port="8123", cost_weight="0.25", store=None)
    assert (cfg.port, cfg.cost_weight, cfg.store) == (8123, 0.25, str(tmp_path / "s.db"))
    with pytest.raises(ConfigurationError, match=r"port: Input should be a valid integer.*\(got 'eighty'\)"):
        load_config(path, port="eighty")
    assert {"host", "port", "store", "policy", "cost_weight", "cooldown_s"} <= set(flag_fields())
    assert "models" not in flag_fields() and "api_keys" not in flag_fields()


def test_every_bad_key_gets_its_own_line(tmp_path: Path) -> None:
    bad = {
        "models": [
            {**MODEL, "input_price": -1, "base_url": "ftp://example"},
            {**MODEL, "name": "b", "timeout_s": 0, "colour": "red"},
        ],
        "policy": "p",
        "store": "s.db",
        "cost_weight": -0.5,
        "featurize": "everything",
    }
    with pytest.raises(ConfigurationError) as err:
        load_config(_write_yaml(tmp_path / "gw.yaml", bad))
    text = str(err.value)
    assert text.startswith(f"gateway config {tmp_path / 'gw.yaml'} is invalid:")
    for line in (
        "models[0].base_url: must start with http:// or https:// (got 'ftp://example')",
        "models[0].input_price: Input should be greater than or equal to 0 (got -1)",
        "models[1].timeout_s: Input should be greater than 0 (got 0)",
        "models[1].colour: Extra inputs are not permitted (got 'red')",
        "cost_weight: Input should be greater than or equal to 0 (got -0.5)",
        "featurize: Input should be 'last_user' or 'all' (got 'everything')",
    ):
        assert line in text
    assert len(text.splitlines()) == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": [MODEL, MODEL]}, r"names must be unique, got \['a'\] more than once"),
        ({"models": [{**MODEL, "name": "router-1"}]}, "names starting with 'router-' are the router's own"),
        ({"cascade_policy": "c"}, "exactly one of policy .* or cascade_policy .*, got both"),
        ({"policy": None}, "got neither"),
        ({"budget": {"usd_per_query": 0.01}}, r"budget: .*unknown key\(s\) \['usd_per_query'\]"),
        ({"budget": {"target_per_query": -1}}, r"budget: .*target_per_query must be a USD amount > 0"),
        ({"budget": {}}, "budget: .*give exactly one of target_per_query"),
        ({"budget": {"target_per_query": 0.01}, "cost_weight": 0.5}, "cost_weight .* or budget .*, not both"),
        (
            {"budget": {"target_per_query": 0.01}, "policy": None, "cascade_policy": "c"},
            "a cascade_policy has no λ to pace",
        ),
        (
            {"cascade": {"signal": "verifier", "verifier_model": "z"}},
            "verifier_model 'z' is not one of the models",
        ),
        ({"host": "0.0.0.0"}, "host '0.0.0.0' is not a loopback address: set api_keys or api_keys_env"),
        ({"api_keys": ["short"]}, r"api_keys\[0\]: String should have at least 8 characters"),
        ({"store": ""}, "store: String should have at least 1 character"),
    ],
)
def test_inconsistent_configs_are_refused(change: dict[str, Any], message: str) -> None:
    values = {"models": [MODEL], "policy": "p", "store": "s.db", **change}
    with pytest.raises(ConfigurationError, match=message):
        load_config(**values)


def test_a_public_host_needs_client_keys_and_their_variable_must_be_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = load_config(models=[MODEL], policy="p", store="s.db", host="0.0.0.0", api_keys_env="GW_TEST_KEYS")
    monkeypatch.delenv("GW_TEST_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="api_keys_env: the variable GW_TEST_KEYS is unset or empty"):
        cfg.client_keys()
    monkeypatch.setenv("GW_TEST_KEYS", "key-one-1234, key-two-5678,")
    assert cfg.client_keys() == ("key-one-1234", "key-two-5678")
    assert GatewayConfig(models=[MODEL], policy="p", store="s", api_keys=["k" * 8]).client_keys() == (
        "k" * 8,
    )


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the gateway config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigurationError, match=r"must be a mapping of keys .*, got list"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigurationError, match="is not valid JSON"):
        load_config(tmp_path / "broken.json")
    (tmp_path / "broken.yaml").write_text("models: [\n")
    with pytest.raises(ConfigurationError, match="is not valid YAML"):
        load_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("h", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
