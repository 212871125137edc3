"""Readiness: what ``/readyz`` reports, part by part."""

from __future__ import annotations

from dataclasses import dataclass

from app.components import Components
from app.db.health import ping_database
from app.rag.routing import BreakerState


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    retry_after: int


def readiness(components: Components) -> Readiness:
    """Ask the database a trivial question on a pooled connection within its own short timeout (known to be
    down: without asking)."""
    settings = components.settings.database
    health = components.database_health
    if health is not None:
        problem = health.check(components.engine)
    else:
        problem = ping_database(components.engine, settings.request_timeout_seconds)
    checks = {"database": "ok" if problem is None else f"down: {problem}"}
    # Adapters whose circuit breaker is open are reported, but do not make the service unready: the base
    # model answers their questions meanwhile.
    adapters = components.adapters.adapters()
    if adapters:
        open_breakers = [a.name for a in adapters if components.router.breaker_state(a.name) != BreakerState.CLOSED]
        checks["adapters"] = (
            f"{len(adapters)} registered; circuit open (the base model answers): {', '.join(open_breakers)}"
            if open_breakers
            else f"{len(adapters)} registered, all closed"
        )
    return Readiness(ready=problem is None, checks=checks, retry_after=settings.retry_after_seconds)
