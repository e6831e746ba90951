"""routing-env: learn, evaluate and deploy LLM routing and cascade policies from logged outcomes."""

import routing_env.envs  # noqa: F401  (registers the Gymnasium env ids)
from routing_env.data import LoggedDataset, ModelCard, make_synthetic
from routing_env.errors import RoutingEnvError, SchemaError

__version__ = "0.1.0"

__all__ = ["LoggedDataset", "ModelCard", "RoutingEnvError", "SchemaError", "__version__", "make_synthetic"]
