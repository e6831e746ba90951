"""Adapters for other tools' plug-in points.

- :mod:`agents.integrations.litellm`: a LiteLLM ``CustomRoutingStrategyBase`` that routes a LiteLLM ``Router``'s
  requests with a learned policy through :class:`~agents.online.OnlineRouter`, and a ``CustomLogger`` that records
  each call's cost, latency and tokens for its decision (the ``litellm`` extra; imported only when used).
"""
