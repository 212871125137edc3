"""Prometheus ``/metrics``: every ``wenda_`` series of this process, and the HTTP ones measured here."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info
from starlette.concurrency import run_in_threadpool

from app.metrics import SECONDS_BUCKETS

router = APIRouter(tags=["operations"])

# Methods a client may send are unbounded; anything else counts as "other", so that no request can add series.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LABELS = ("handler", "method", "status")
_HTTP_LATENCY = Histogram(
    "wenda_http_request_duration_seconds",
    "Duration of HTTP requests in seconds, by route template, method and status class (2xx, 4xx, 5xx); a "
    "streamed answer's includes its stream.",
    _LABELS,
    buckets=SECONDS_BUCKETS,
)
_HTTP_REQUESTS = Counter("wenda_http_requests_total", "HTTP requests, by route template, method and status class.", _LABELS)


def _observe(info: Info) -> None:
    method = info.method if info.method in _KNOWN_METHODS else "other"
    labels = (info.modified_handler, method, info.modified_status)
    _HTTP_LATENCY.labels(*labels).observe(info.modified_duration)
    _HTTP_REQUESTS.labels(*labels).inc()


def instrument_http(app: FastAPI) -> None:
    """Time every request by its route template (``/v1/documents/{document_id}``, never each id; paths no
    route matches count as ``none``)."""
    Instrumentator(should_group_status_codes=True, should_group_untemplated=True).add(_observe).instrument(app)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    # Collecting reads the queue's depth from SQL: off the event loop.
    return Response(await run_in_threadpool(generate_latest, REGISTRY), media_type=CONTENT_TYPE_LATEST)
