"""What every ``routing-env`` subcommand shares: ``--version``, plain help with defaults, errors worded with the
CLI's own flags, corrupt files reported in one line, tables that fit the terminal, and λ taken from the policy."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.cli import build_parser, main
from agents.cli.common import cli_text, plain_text
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.ope import IPS, BanditFeedback, estimate_policy_value, simulate_bandit_feedback
from tests.ope.ope_policies import random_linear

REST = re.compile(r"``|:(class|func|meth|data|mod|attr):`|\.\. ")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the CLI, nested subcommands included, with its command line."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from parsers(child)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"routing-env \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_help_is_plain_text_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    seen = set()
    for prog, parser in parsers(build_parser()):
        text = parser.format_help()
        assert not REST.search(text), f"reST markup in `{prog} --help`:\n{text}"
        seen.add(prog)
        for action in parser._actions:
            default = action.default
            flag_only = isinstance(action, (argparse._StoreTrueAction, argparse._VersionAction))
            no_default = any(default is v for v in (None, False, argparse.SUPPRESS))
            if action.option_strings and not no_default and not flag_only:
                flag = action.option_strings[-1]
                options = text[text.index("options:") :]
                start = re.search(rf"\n  (?:-\w, )?{re.escape(flag)}\b", options)
                assert start is not None, f"{prog} {flag} is not listed"
                block = options[start.end() :]
                block = block[: block.find("\n  -") if "\n  -" in block else len(block)]
                assert "default" in block, f"{prog} {flag}: the default {default!r} is not shown"
    assert {
        "routing-env ope",
        "routing-env datasets summary",
        "routing-env serve",
        "routing-env demo",
    } <= seen
    ope = dict(parsers(build_parser()))["routing-env ope"].format_help()
    assert "bootstrap replicates, 0 to skip (default: 1000)" in re.sub(r"\s+", " ", ope)
    assert "The reward is quality − λ·cost/cost_scale" in re.sub(r"\s+", " ", ope)


def test_plain_text_and_cli_text() -> None:
    assert (
        plain_text("see :class:`~routing_env.data.LoggedDataset` and ``x_0``::")
        == "see LoggedDataset and x_0:"
    )
    assert plain_text(":func:`routing_env.data.load_dataset`") == "routing_env.data.load_dataset"
    parser = argparse.ArgumentParser()
    parser.add_argument("--normalize")
    parser.add_argument("--quality-range", nargs=2)
    parser.add_argument("--complete-only", action="store_true")
    parser.add_argument("--root")
    text = (
        "pass normalize='minmax' (with quality_range=(low, high) for a judge scale such as (1, 10)) or "
        "normalize='clip'; Use from_frame(normalize='minmax'|'clip'); keep them with dataset.complete_only(); "
        "load_dataset('x') needs root= (the folder); cost_weight=0.5 stays"
    )
    assert cli_text(text, parser) == (
        "pass --normalize minmax (with --quality-range low high for a judge scale such as (1, 10)) or "
        "--normalize clip; Use from_frame(--normalize minmax|clip); keep them with --complete-only; "
        "load_dataset('x') needs --root (the folder); cost_weight=0.5 stays"
    )


@pytest.fixture
def judge_file(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q2"],
            "model": ["a", "b", "a", "b"],
            "quality": [1.0, 10.0, 4.0, 7.0],
            "cost": [0.1, 0.2, 0.1, 0.2],
        }
    )
    frame.to_csv(tmp_path / "judge.csv", index=False)
    return tmp_path / "judge.csv"


def test_errors_suggest_the_flags_the_cli_has(capsys: pytest.CaptureFixture[str], judge_file: Path) -> None:
    code, _, err = run(capsys, "datasets", "summary", str(judge_file))
    assert code == 2 and "--normalize minmax (with --quality-range LOW HIGH" not in err
    assert "pass --normalize minmax (with --quality-range low high" in err and "normalize='" not in err
    code, out, _ = run(
        capsys, "datasets", "summary", str(judge_file), "--normalize", "minmax", "--quality-range", "1", "10"
    )
    assert code == 0 and "quality_normalization: minmax from [1.0, 10.0] to [0, 1]" in out
    code, _, err = run(capsys, "datasets", "summary", "routellm-mmlu", "--normalize", "clip", "--root", ".")
    assert code == 2 and "--normalize and --quality-range apply to canonical files" in err


def test_partial_logs_warn_in_cli_words_and_complete_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    frame = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2"],
            "model": ["a", "b", "a"],
            "quality": [1.0, 0.0, 1.0],
            "cost": [0.1, 0.2, 0.1],
        }
    )
    frame.to_csv(tmp_path / "partial.csv", index=False)
    code, _, err = run(capsys, "datasets", "summary", str(tmp_path / "partial.csv"), "--plain")
    assert code == 0
    assert (
        "routing-env datasets: warning: 1 of 2 queries lack an outcome: model 'b' has no row on 1 query"
        in err
    )
    assert "Keep the 1 complete queries with --complete-only" in err
    code, out, err = run(
        capsys, "datasets", "summary", str(tmp_path / "partial.csv"), "--plain", "--complete-only"
    )
    assert code == 0 and "--complete-only: kept 1 of 2 queries" in out and "n_queries=1" in out


def test_ope_on_full_information_logs_is_worded_for_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = make_synthetic(n_queries=200, models=3, n_features=4, seed=2)
    policy = random_linear(data.models, data.n_features, seed=4).save(tmp_path / "policy")
    code, _, err = run(
        capsys, "ope", "--log", str(data.save(tmp_path / "full.parquet")), "--policy", str(policy)
    )
    assert code == 2 and "needs bandit logs" in err and "evaluate_policy" in err
    assert "simulate_bandit_feedback" not in err


@pytest.mark.parametrize(
    ("name", "kind"),
    [("logs.parquet", "parquet"), ("logs.csv", "CSV"), ("logs.jsonl", "JSON-lines")],
)
def test_corrupt_files_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, kind: str
) -> None:
    good = make_synthetic(n_queries=50, models=2, seed=0).save(tmp_path / "good.parquet").read_bytes()
    path = tmp_path / name
    path.write_bytes(good[: len(good) // 2] if kind == "parquet" else good)
    for argv in (("datasets", "summary", str(path)), ("ope", "--log", str(path), "--policy", str(tmp_path))):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "Traceback" not in err
        assert err.count("\n") == 1 and f"{path} is not a readable {kind} file" in err, err


def test_tables_fit_the_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "72")
    data = make_synthetic(n_queries=400, models=3, n_features=4, seed=2)
    logger = random_linear(data.models, data.n_features, seed=0, temperature=3.0, epsilon=0.3)
    log_path = simulate_bandit_feedback(data, logger, seed=0).to_dataset().save(tmp_path / "logs.parquet")
    policy = random_linear(data.models, data.n_features, seed=4).save(tmp_path / "policy")
    _, out, _ = run(capsys, "ope", "--log", str(log_path), "--policy", str(policy), "--n-bootstrap", "20")
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 72
    for extra in ((), ("--plain",)):
        _, out, _ = run(capsys, "datasets", "summary", "sample", *extra)
        body = out[out.index("summary at cost_weight") :].splitlines()[1:]
        assert body and max(len(line) for line in body) <= 72, extra


def ope(capsys: pytest.CaptureFixture[str], log: Path, policy: Path, *options: str) -> tuple[int, str]:
    """``routing-env ope`` without the bootstrap: ``(exit code, stdout)``."""
    code, out, _ = run(
        capsys, "ope", "--log", str(log), "--policy", str(policy), "--n-bootstrap", "0", *options
    )
    return code, out


def test_ope_takes_the_cost_weight_from_the_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from agents.routers import BestSingleModel

    data = make_synthetic(n_queries=600, models=3, n_features=4, seed=5)
    router = BestSingleModel(cost_weight=0.5).fit(data)
    policy = router.save(tmp_path / "best")
    fb = simulate_bandit_feedback(data, np.full((data.n_queries, 3), 1 / 3), seed=1)
    log_path = fb.to_dataset().save(tmp_path / "logs.parquet")
    code, out = ope(capsys, log_path, policy, "--estimators", "IPS", "--csv", str(tmp_path / "t.csv"))
    assert code == 0
    assert "λ = 0.5 (the policy's cost_weight, the λ it was trained for" in out
    assert f"cost_scale = {router.cost_scale_:.4g} USD (the policy's fitted cost scale)" in out
    table = pd.read_csv(tmp_path / "t.csv")
    logs = BanditFeedback.from_dataset(
        LoggedDataset.read(log_path), cost_weight=0.5, cost_scale=router.cost_scale_
    )
    expected = estimate_policy_value(router, logs, ["IPS"], n_bootstrap=0)
    assert table["cost_weight"].iloc[0] == 0.5
    np.testing.assert_allclose(table["estimate"], expected["estimate"])
    code, out = ope(
        capsys, log_path, policy, "--estimators", "IPS", "--cost-weight", "0", "--cost-scale", "max_mean"
    )
    assert code == 0 and "λ = 0 (--cost-weight)" in out and "(--cost-scale max_mean" in out


@pytest.mark.filterwarnings("ignore::routing_env.errors.OPEWarning")
def test_ope_weight_options_reach_the_estimators(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_synthetic(n_queries=400, models=3, n_features=4, seed=2)
    logger = random_linear(data.models, data.n_features, seed=0, temperature=1.0)
    log_path = simulate_bandit_feedback(data, logger, seed=0).to_dataset().save(tmp_path / "logs.parquet")
    target = random_linear(data.models, data.n_features, seed=4, temperature=0.3)
    policy = target.save(tmp_path / "policy")
    options = ("--estimators", "IPS,DM", "--max-weight", "2", "--csv", str(tmp_path / "t.csv"))
    assert ope(capsys, log_path, policy, *options)[0] == 0
    logs = BanditFeedback.from_dataset(LoggedDataset.read(log_path))
    clipped = estimate_policy_value(target, logs, [IPS(max_weight=2.0)], n_bootstrap=0)
    assert pd.read_csv(tmp_path / "t.csv")["estimate"].iloc[0] == pytest.approx(clipped["estimate"].iloc[0])
