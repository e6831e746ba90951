"""The gateway's configuration: one typed pydantic model, read from YAML or JSON, overridden by command-line flags.

The file and the flags are two views of :class:`GatewayConfig`, validated in one place (:func:`load_config`); every
bad key gets its own line in the error, naming the key, the value and what was expected. Relative paths in a file
are relative to the file's directory.

.. code-block:: yaml

    models:                       # every model the policy routes to (OpenAI-compatible upstreams)
      - name: small-3b
        base_url: http://127.0.0.1:9001/v1
        api_key_env: SMALL_API_KEY   # the upstream's key is read from this variable (never from the file)
        input_price: 0.06            # USD per 1M prompt tokens
        output_price: 0.06           # USD per 1M completion tokens
        timeout_s: 30
        max_retries: 1
        upstream_model: meta-llama/Llama-3.2-3B-Instruct   # the name the upstream knows (default: name)
    policy: runs/linucb           # a saved routing policy carrying its featurizer (or cascade_policy: DIR)
    store: runs/gateway.db
    cost_weight: 0.5              # λ of "router" (default: the policy's own)
    # budget:                     # or pace λ to a spend instead of fixing it (agents.online.BudgetPacer)
    #   target_per_query: 0.002   # USD per query on average (or target_per_hour: 5.0)
    api_keys_env: GATEWAY_KEYS    # comma-separated client keys (or api_keys: [...]); none: loopback only
    shadows:                      # candidates scored on every decision, never served (GET /v1/shadows/NAME/report)
      candidate: runs/linucb-v2
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from routing_env.errors import ConfigurationError

Name = Annotated[str, Field(min_length=1, max_length=256)]
Price = Annotated[FiniteFloat, Field(ge=0, description="USD per 1M tokens")]
#: Path fields of :class:`GatewayConfig` resolved against the directory of the file that sets them.
PATH_FIELDS = ("policy", "cascade_policy", "featurizer", "store", "policy_root", "canary_policy")
#: The names a client sends as ``model`` to be routed (``router-<λ>`` sets λ too).
ROUTER_NAME = "router"

DEFAULT_VERIFIER_PROMPT = (
    "You grade answers. Reply with one number between 0 and 1: the probability that the answer below is a "
    "correct and complete answer to the question. Reply with the number only."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamModel(_Strict):
    """One model the gateway can call: an OpenAI-compatible chat-completions server and its prices."""

    name: Name = Field(description="the model's name in the policy and in client requests")
    base_url: str = Field(min_length=8, max_length=2048, description="e.g. http://127.0.0.1:8001/v1")
    api_key_env: str | None = Field(
        None, min_length=1, description="environment variable holding its API key"
    )
    input_price: Price
    output_price: Price
    timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds per attempt")
    max_retries: int = Field(
        1, ge=0, le=10, description="retries after a timeout, 5xx or 429 (then fail-over)"
    )
    upstream_model: Name | None = Field(
        None, description="the model name the upstream expects (default: name)"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def served_name(self) -> str:
        """The model name sent upstream."""
        return self.upstream_model or self.name

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD of a call with these token counts."""
        return (input_tokens * self.input_price + output_tokens * self.output_price) / 1e6


class CascadeSettings(_Strict):
    """How a cascade policy's signal is computed from an answer.

    ``signal``: ``"logprob"`` — the mean token log-probability of the answer (the gateway asks for ``logprobs``);
    ``"probability"`` — its exponential, the geometric-mean token probability in (0, 1]; ``"verifier"`` — a grade in
    [0, 1] from the Python ``verifier`` callable given to the app, or else from ``verifier_model`` (a configured
    model asked, with ``verifier_prompt``, how likely the answer is correct).
    """

    signal: Literal["logprob", "probability", "verifier"] = "logprob"
    verifier_model: Name | None = None
    verifier_prompt: str = Field(default=DEFAULT_VERIFIER_PROMPT, min_length=1, max_length=10_000)


class GatewayConfig(_Strict):
    """Everything ``routing-env gateway`` needs (see the module docstring for a file)."""

    models: list[UpstreamModel] = Field(min_length=1, max_length=1024)
    policy: str | None = Field(
        None, description="saved routing policy directory (used when the store is new)"
    )
    cascade_policy: str | None = Field(None, description="saved cascade policy directory, instead of policy")
    featurizer: str | None = Field(None, description="saved featurizer, for a policy that carries none")
    featurize: Literal["last_user", "all"] = Field(
        "last_user", description="what the policy sees: the last user message, or every message's text"
    )
    store: str = Field(min_length=1, description="decision store: a SQLite file or a postgresql:// URL")
    cost_weight: Annotated[FiniteFloat, Field(ge=0)] | None = Field(None, description="λ of model=router")
    cost_scale: Annotated[FiniteFloat, Field(gt=0)] | None = Field(None, description="USD per unit of λ")
    budget: dict[str, Any] | None = Field(
        None, description="budget pacing: BudgetConfig settings (target_per_query or target_per_hour, …)"
    )
    cascade: CascadeSettings = CascadeSettings()
    cooldown_s: float = Field(30.0, gt=0, le=86_400, description="seconds a failed model is skipped")
    host: str = Field("127.0.0.1", min_length=1, description="interface to bind")
    port: int = Field(8000, ge=0, le=65_535, description="port to bind")
    api_keys: list[Annotated[str, Field(min_length=8, max_length=512)]] = Field(default_factory=list)
    api_keys_env: str | None = Field(
        None, min_length=1, description="variable of comma-separated client keys"
    )
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger requests get 413")
    checkpoint_every: int = Field(100, ge=1, description="save the policy every N updates")
    feedback_timeout_s: float | None = Field(None, gt=0, description="seconds before a decision expires")
    default_quality: float | None = Field(
        None, ge=0, le=1, description="quality applied to expired decisions"
    )
    seed: int = Field(0, ge=0, description="root seed of the routing draws")
    synchronous: Literal["NORMAL", "FULL"] = Field("NORMAL", description="SQLite durability (FULL: fsync)")
    version: str | None = Field(None, min_length=1, max_length=128, description="version id of the policy")
    policy_root: str | None = Field(
        None, description="hot swaps only load policy directories inside this one"
    )
    canary: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="share of traffic canary_policy serves (promoted or rolled back by the gate)",
    )
    canary_policy: str | None = Field(None, description="the canary's saved policy directory (with canary)")
    shadows: dict[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/\x00]+$")], str] = Field(
        default_factory=dict,
        description="candidate policies scored on every decision without serving it: name → saved directory",
    )

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from agents.online.pacing import BudgetConfig

            try:
                # Validated here so that a bad budget is one line of the config's error, not a start-up crash.
                value = BudgetConfig.from_mapping(value, where="budget").to_dict()
            except ConfigurationError as exc:
                raise ValueError(str(exc).removeprefix("budget: ")) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [m.name for m in self.models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"models: names must be unique, got {twice} more than once")
        if any(n == ROUTER_NAME or n.startswith(ROUTER_NAME + "-") for n in names):
            raise ValueError(
                f"models: {ROUTER_NAME!r} and names starting with 'router-' are the router's own"
            )
        if self.budget is not None and self.cost_weight is not None:
            raise ValueError(
                "give cost_weight (a fixed λ) or budget (λ paced to a spend), not both; the pacer starts at "
                "budget.initial_cost_weight"
            )
        if self.budget is not None and self.cascade_policy is not None:
            raise ValueError(
                "budget pacing needs a cost-aware routing policy; a cascade_policy has no λ to pace"
            )
        if (self.policy is None) == (self.cascade_policy is None):
            raise ValueError(
                "give exactly one of policy (a routing policy) or cascade_policy (a cascade policy), got "
                + ("both" if self.policy is not None else "neither")
            )
        if (self.canary is None) != (self.canary_policy is None):
            raise ValueError("canary (a share of traffic) and canary_policy (a saved policy) go together")
        verifier = self.cascade.verifier_model
        if verifier is not None and verifier not in names:
            raise ValueError(f"cascade.verifier_model {verifier!r} is not one of the models {names}")
        if not self.api_keys and self.api_keys_env is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address: set api_keys or api_keys_env (clients then send "
                "'Authorization: Bearer <key>'), or bind 127.0.0.1"
            )
        return self

    def model(self, name: str) -> UpstreamModel:
        """The configured model called ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def client_keys(self) -> tuple[str, ...]:
        """The client API keys: ``api_keys`` plus those in ``$api_keys_env`` (which must then be set)."""
        keys = list(self.api_keys)
        if self.api_keys_env is not None:
            raw = os.environ.get(self.api_keys_env, "")
            given = [k.strip() for k in raw.split(",") if k.strip()]
            if not given:
                raise ConfigurationError(
                    f"api_keys_env: the variable {self.api_keys_env} is unset or empty; set it to the "
                    "comma-separated client keys"
                )
            keys.extend(given)
        return tuple(keys)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path | None = None, **overrides: Any) -> GatewayConfig:
    """The :class:`GatewayConfig` of the YAML or JSON file ``path`` with ``overrides`` (flags) on top.

    Raises:
        ConfigurationError: the file is unreadable or not a mapping, or keys are invalid (one line per key).
    """
    values: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        file = Path(path)
        values = _read(file)
        base = file.resolve().parent
        for key in PATH_FIELDS:
            if isinstance(values.get(key), str) and not _is_url(values[key]):
                values[key] = str(base / Path(values[key]).expanduser())
        if isinstance(values.get("shadows"), dict):
            values["shadows"] = {
                k: str(base / Path(v).expanduser()) if isinstance(v, str) else v
                for k, v in values["shadows"].items()
            }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig.model_validate(values)
    except ValidationError as exc:
        where = f"gateway config {path}" if path is not None else "gateway config"
        raise ConfigurationError(f"{where} is invalid:\n" + describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per error of ``exc``: the key path, what is wrong, and the value given."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        given = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(given, dict) else f" (got {given!r:.200})"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc or 'config'}: {message}{shown}")
    return "\n".join(lines)


def _read(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the gateway config {file}: {exc}") from None
    try:
        if file.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as exc:  # yaml's and json's parse errors share no base class
        raise ConfigurationError(f"the gateway config {file} is not valid {_format(file)}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigurationError(
            f"the gateway config {file} must be a mapping of keys (models, policy, store, ...), "
            f"got {type(values).__name__}"
        )
    return values


def _format(file: Path) -> str:
    return "JSON" if file.suffix.lower() == ".json" else "YAML"


def _is_url(text: str) -> bool:
    return "://" in text


def flag_fields() -> dict[str, str]:
    """The fields a command-line flag may set (every scalar one), with their descriptions: ``--cost-weight 0.3``
    sets ``cost_weight``. Flags pass strings; :func:`load_config` validates them with the file's values."""
    return {
        name: field.description or name.replace("_", " ")
        for name, field in GatewayConfig.model_fields.items()
        if name not in _STRUCTURED
    }


_STRUCTURED = ("models", "cascade", "api_keys", "budget", "shadows")
