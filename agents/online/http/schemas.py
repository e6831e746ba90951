"""The request and response models of the online router's HTTP API (pydantic; the ``serve`` extra).

Request models forbid unknown fields and refuse NaN and ±inf (``FiniteFloat``), so bad input is a 422 naming the
field. ``ERRORS`` and ``ADMIN_ERRORS`` are the error responses the OpenAPI document lists per endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

ModelName = Annotated[str, Field(min_length=1, max_length=256)]
DecisionId = Annotated[str, Field(min_length=1, max_length=256)]
NonNegative = Annotated[FiniteFloat, Field(ge=0)]
_M = TypeVar("_M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouteRequest(_Body):
    """Route one query: give its ``features`` (width of the policy) or its ``prompt`` (featurized server-side)."""

    features: list[FiniteFloat] | None = Field(None, max_length=100_000, description="(d,) query features")
    prompt: str | None = Field(None, max_length=200_000, description="query text")
    request_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="idempotency key: the same id returns the same decision"
    )
    allowed_models: list[ModelName] | None = Field(
        None, min_length=1, max_length=1024, description="route only among these models"
    )
    cost_weight: NonNegative | None = Field(None, description="λ for this request (cost-aware policies)")


class RouteResponse(BaseModel):
    decision_id: str
    request_id: str | None
    kind: Literal["route", "cascade"]
    model: str = Field(description="the model to call")
    action: int
    propensity: float = Field(description="probability of `model` under the distribution sampled from")
    probabilities: dict[str, float]
    policy_version: str
    created_at: float = Field(description="UNIX time, seconds")
    max_calls: int


class FeedbackRequest(_Body):
    decision_id: DecisionId
    quality: Annotated[FiniteFloat, Field(ge=0, le=1)] = Field(description="in [0, 1]")
    cost: NonNegative | None = Field(None, description="USD")
    latency_s: NonNegative | None = Field(None, description="seconds")


class FeedbackResponse(BaseModel):
    decision_id: str
    seq: int = Field(description="apply order of this feedback")
    reward: float
    applied: bool = Field(description="the policy learned from it")
    policy_version: str
    received_at: float


class ObserveRequest(_Body):
    signal: FiniteFloat = Field(
        description="confidence / self-verification / log-prob of the answer just received"
    )
    cost: NonNegative | None = Field(None, description="USD cost of that call")


class ObserveResponse(BaseModel):
    decision_id: str
    step: int
    action: Literal["accept", "call"]
    model: str = Field(description="the model accepted, or the model to call next")
    propensity: float
    stop_probability: float
    n_calls: int


class StepView(BaseModel):
    step: int
    signal: float
    cost: float | None
    stop: bool
    propensity: float
    forced: bool


class CallView(BaseModel):
    index: int
    step: int
    model: str
    purpose: Literal["answer", "verify"]
    created_at: float = Field(description="UNIX time, seconds")
    status: Literal["ok", "timeout", "error", "rejected"]
    http_status: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None = Field(description="USD")
    latency_s: float


class FeedbackView(BaseModel):
    seq: int
    source: Literal["client", "default"]
    quality: float
    cost: float
    latency_s: float | None
    reward: float
    applied: bool
    received_at: float


class DecisionView(RouteResponse):
    status: Literal["open", "closed", "expired"]
    cost_weight: float
    allowed_models: list[str] | None
    prompt: str | None = Field(description="the prompt as stored (a prefix when prompt_chars is larger)")
    prompt_chars: int | None = Field(description="length in characters of the prompt the caller sent")
    features: list[float]
    n_calls: int
    steps: list[StepView]
    calls: list[CallView] = Field(description="the upstream calls a gateway made for it")
    feedback: FeedbackView | None


class PolicySwapRequest(_Body):
    path: str = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00]*$",
        description="a saved policy directory on the server",
    )
    version: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    force: bool = Field(
        False,
        description="swap even when the new policy changes the request contract (features or prompt, feature "
        "width, models, route or cascade); clients must then change their requests",
    )


class PolicySwapResponse(BaseModel):
    version: str
    previous_version: str
    kind: Literal["route", "cascade"]
    models: list[str]


class CheckpointResponse(BaseModel):
    path: str = Field(description="the saved policy directory on the server")
    policy_version: str
    last_feedback_seq: int


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    reason: str | None = Field(None, description="why the service cannot serve (HTTP 503)")
    policy_version: str
    kind: Literal["route", "cascade"]
    decisions: int
    pending: int
    log_position: int = Field(description="the last log position this replica applied to its policy")
    log_lag: int = Field(description="log entries committed but not yet applied here (head − log_position)")


class ErrorBody(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown decision id"},
    409: {"model": ErrorBody, "description": "decision already closed"},
    422: {"model": ErrorBody, "description": "invalid request"},
    429: {"model": ErrorBody, "description": "the client sent more than its rate limit"},
    503: {"model": ErrorBody, "description": "the decision store could not commit; nothing was stored"},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    403: {"model": ErrorBody, "description": "admin endpoints closed: the service has no token"},
    409: {"model": ErrorBody, "description": "the swap changes the request contract (send force: true)"},
    422: {"model": ErrorBody, "description": "invalid request"},
}


def fields_of(model: type[BaseModel], record: Any, **values: Any) -> dict[str, Any]:
    """The fields of ``model`` taken from ``record``'s attributes of the same names, ``values`` taking precedence."""
    return {name: values[name] if name in values else getattr(record, name) for name in model.model_fields}


def view(model: type[_M], record: Any, **values: Any) -> _M:
    """``model`` built from a store record (:func:`fields_of`): the API shows the log's own field names."""
    return model(**fields_of(model, record, **values))
