"""Prometheus ``/metrics``: every ``wenda_`` series of this process, and the HTTP ones measured here."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics
from starlette.concurrency import run_in_threadpool

from app.metrics import SECONDS_BUCKETS

router = APIRouter(tags=["operations"])

# Made once per process: the instrumentator refuses to register a series twice and would then instrument
# nothing for a second app (tests build many).
_HTTP_LATENCY = http_metrics.latency(
    metric_name="wenda_http_request_duration_seconds",
    metric_doc="Duration of HTTP requests in seconds, by route template, method and status class (2xx, 4xx, "
    "5xx); a streamed answer's includes its stream.",
    buckets=SECONDS_BUCKETS,
)
_HTTP_REQUESTS = http_metrics.requests(
    metric_name="wenda_http_requests_total",
    metric_doc="HTTP requests, by route template, method and status class.",
)


def instrument_http(app: FastAPI) -> None:
    """Time every request by its route template (``/v1/documents/{document_id}``, never each id; paths no
    route matches count as ``none``)."""
    instrumentator = Instrumentator(should_group_status_codes=True, should_group_untemplated=True)
    instrumentator.add(_HTTP_LATENCY, _HTTP_REQUESTS).instrument(app)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    # Collecting reads the queue's depth from SQL: off the event loop.
    return Response(await run_in_threadpool(generate_latest, REGISTRY), media_type=CONTENT_TYPE_LATEST)
