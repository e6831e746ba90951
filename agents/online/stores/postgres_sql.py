"""The SQL statements of :class:`~agents.online.stores.postgres.PostgresDecisionStore` that are built from the
shared column lists (``%s`` placeholders, psycopg's)."""

from __future__ import annotations

from agents.online.stores.calls import CALL_COLUMNS
from agents.online.stores.sql import (
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    N_DECISION_COLUMNS,
    STEP_COLUMNS,
    qualified,
)

D_COLUMNS = qualified(DECISION_COLUMNS, "d")
# Log entries after a position, in log order: feedback with its decision, or a swap with its checkpoint's id;
# %s = the position, then the limit.
LOG_AFTER = (
    f"SELECT l.position, l.kind, l.checkpoint_id, {qualified(FEEDBACK_COLUMNS, 'f')}, {D_COLUMNS} FROM log l "
    "LEFT JOIN feedback f ON f.decision_id = l.decision_id LEFT JOIN decisions d ON d.decision_id = l.decision_id "
    "WHERE l.position > %s ORDER BY l.position LIMIT %s"
)
FEEDBACK_OF = (
    f"SELECT l.position, {qualified(FEEDBACK_COLUMNS, 'f')} FROM feedback f "
    "JOIN log l ON l.decision_id = f.decision_id WHERE f.decision_id = %s"
)
APPEND_FEEDBACK = "SELECT routing_env_append_feedback(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
INSERT_DECISION = (
    f"INSERT INTO decisions ({DECISION_COLUMNS}) VALUES ({', '.join(['%s'] * N_DECISION_COLUMNS)}) "
    "ON CONFLICT DO NOTHING RETURNING seq"
)
INSERT_STEP = (
    f"WITH s AS (INSERT INTO steps ({STEP_COLUMNS}) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING decision_id) "
    "UPDATE decisions SET n_calls = %s, model = %s, action = %s WHERE decision_id IN (SELECT decision_id FROM s) "
    "RETURNING seq"
)
INSERT_CALL = f"INSERT INTO calls ({CALL_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})"
