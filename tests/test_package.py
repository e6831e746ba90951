"""The package imports cleanly and keeps its layers."""

from __future__ import annotations

import subprocess
import sys


def test_routing_env_imports_without_torch() -> None:
    code = (
        "import sys, routing_env, routing_env.data, routing_env.policy; "
        "assert 'torch' not in sys.modules, 'routing_env imported torch'; "
        "assert 'stable_baselines3' not in sys.modules; "
        # RLlib training is an optional extra: the packages, and loading a saved RLlib policy, never import ray.
        "import agents, agents.training, agents.training.rllib; from agents.training import RLlibPolicy; "
        "assert 'ray' not in sys.modules, 'importing the packages imported ray'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agents.cli", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "demo" in out and "datasets" in out
