"""Checkpoint ids as timestamps: LangGraph's ids are uuid6, whose text sorts in the order they were made.

A uuid6 holds a 60-bit count of 100-ns intervals since 1582-10-15 in its leading bits (the version digit
sits in between, the same in every id), then a clock sequence and a node. Its canonical text is fixed-width
lowercase hex, so comparing two ids as strings (what SQLite and Cypher do) compares their creation times first.
LangGraph takes the id when it creates a checkpoint, a few microseconds before the checkpoint's ``ts``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from langgraph.checkpoint.base.id import UUID

from mnemoflow.errors import InvalidQueryError

__all__ = ["checkpoint_id_floor"]

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UUID_EPOCH_TICKS = 0x01B21DD213814000
"""100-ns intervals from the uuid epoch (1582-10-15) to the Unix epoch."""
_MAX_TICKS = (1 << 60) - 1


def checkpoint_id_floor(moment: datetime) -> str:
    """The lowest checkpoint id that ``moment`` can have: ids made before it sort lower, the others do not.

    ``moment`` must be timezone-aware (``InvalidQueryError`` otherwise); times outside what a uuid6 can
    encode (before 1582, after about 5236) are clamped to its range.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidQueryError(
            f"checkpoint cutoff {moment.isoformat()} has no timezone: pass an aware time, e.g. datetime.now(UTC) - timedelta(days=30)"
        )
    ticks = (moment - _UNIX_EPOCH) // timedelta(microseconds=1) * 10 + _UUID_EPOCH_TICKS
    ticks = min(max(ticks, 0), _MAX_TICKS)
    value = ((ticks >> 12) << 80) | ((ticks & 0x0FFF) << 64)  # clock sequence and node all zero
    return str(UUID(int=value, version=6))
