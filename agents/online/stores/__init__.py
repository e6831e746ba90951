"""Decision stores: the durable log of the online router (SQLite in WAL mode, :mod:`agents.online.stores.sqlite`)."""

from agents.online.stores.sqlite import (
    Checkpoint,
    Decision,
    DecisionStore,
    Feedback,
    PolicyVersion,
    Step,
    StoreCounts,
)

__all__ = ["Checkpoint", "Decision", "DecisionStore", "Feedback", "PolicyVersion", "Step", "StoreCounts"]
