"""What the mock server records: one record per request, and the counters read together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple


@dataclass(slots=True)
class RequestRecord:
    """One request as the server saw it.

    A slotted dataclass rather than a pydantic model: a benchmark makes 100k of these, and they never
    cross a process boundary.
    """

    method: str
    path: str
    arrived_monotonic: float
    arrived_at: datetime
    has_authorization: bool
    headers: dict[str, str] | None
    """Request headers without Authorization; None while `record_bodies` is off."""
    body: Any = None
    """The parsed JSON body; None without one, when it was not JSON, or while `record_bodies` is off."""
    status: int | None = None
    """The status sent; None when no response went out (a scripted Drop, or the client left first)."""
    finished_monotonic: float | None = None
    finished_at: datetime | None = None


class ServerStats(NamedTuple):
    """Counters since start or the last `reset()`."""

    requests: int
    in_flight: int
    max_in_flight: int
    by_status: dict[int, int]
    unanswered: int
