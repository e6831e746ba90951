"""Routers for routing-env: baselines, contextual bandits, PPO, and the online router service."""
