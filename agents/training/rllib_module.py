"""The RLlib RL module PPO trains on the routing envs (needs the ``ray`` extra).

:class:`RoutingPPOModule` is a torch RL module of RLlib's new API stack with two separate MLPs of the same
widths, as in SB3's ``MlpPolicy``: the policy head ``pi`` (logits over the env's actions) and the value head
``vf``. When the observation space is a ``Dict`` of ``"observations"`` and ``"action_mask"`` (how the RLlib
adapter presents free-choice cascades, see :mod:`agents.training.rllib_env`), the logits of masked actions are
pushed to the float32 minimum in every forward pass, so exploration, inference and the PPO loss all see exactly
0 probability on illegal actions.

``model_config`` keys: ``"hidden"`` (list of widths, default ``[128, 128]``) and ``"activation"`` (``"tanh"``,
``"relu"`` or ``"elu"``). The policy head is :func:`agents.training.rllib_policy.build_mlp`, which is what
:class:`~agents.training.rllib_policy.RLlibPolicy` loads the trained parameters into.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from agents.training.rllib_policy import build_mlp, masked_logits
from routing_env.errors import ConfigurationError

__all__ = ["DEFAULT_HIDDEN", "RoutingPPOModule"]

DEFAULT_HIDDEN = (128, 128)


class RoutingPPOModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """Separate policy and value MLPs over a ``Box`` observation, or over ``Dict(observations, action_mask)``.

    Shapes: observations ``(B, n_inputs) float32``; ``action_mask`` ``(B, A)`` with 1 = legal; the forward pass
    returns ``action_dist_inputs`` ``(B, A)`` (logits of RLlib's ``TorchCategorical``) and ``compute_values``
    ``(B,)``.
    """

    def setup(self) -> None:
        space = self.observation_space
        self._masked = isinstance(space, gym.spaces.Dict)
        inner = space["observations"] if self._masked else space  # type: ignore[index]
        if not isinstance(inner, gym.spaces.Box) or len(inner.shape) != 1:
            raise ConfigurationError(f"RoutingPPOModule needs flat Box observations, got {inner}")
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ConfigurationError(f"RoutingPPOModule needs Discrete actions, got {self.action_space}")
        config: dict[str, Any] = dict(self.model_config or {})  # type: ignore[arg-type]
        hidden = tuple(int(h) for h in config.get("hidden", DEFAULT_HIDDEN))
        activation = str(config.get("activation", "tanh"))
        n_inputs, n_actions = int(inner.shape[0]), int(self.action_space.n)
        self.pi = build_mlp(n_inputs, hidden, n_actions, activation, output_gain=0.01)
        if not self.inference_only:
            # Env runners only act: they are built without the value head.
            self.vf = build_mlp(n_inputs, hidden, 1, activation, output_gain=1.0)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        obs = batch[Columns.OBS]
        if self._masked:
            return obs["observations"], obs["action_mask"]
        return obs, None

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        x, mask = self._inputs(batch)
        return {Columns.ACTION_DIST_INPUTS: masked_logits(self.pi(x), mask)}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        x, _ = self._inputs(batch)
        return self.vf(x).squeeze(-1)

    def get_non_inference_attributes(self) -> list[str]:
        return ["vf"]
