"""/readyz names the part that is not ready: the database, the index against SQL, the chat model's backend."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.components import Components
from app.db import documents as db_documents
from app.services.health import IndexCheck
from tests.api.test_documents_api import CHINESE, upload, wait_for_job, wait_ready


def _collection_id(services: Components, name: str) -> int:
    with services.session_factory() as session:
        collection = db_documents.get_collection(session, tenant_id=services.default_tenant_id, name=name)
        assert collection is not None
        return collection.id


def test_an_index_missing_ready_chunks_makes_the_service_unready_and_is_named(
    client: TestClient, services: Components
) -> None:
    wait_ready(client)
    job = upload(client, "ops", "perms.md", CHINESE.encode()).json()
    assert wait_for_job(client, job["job_id"])["status"] == "done"
    client.app.state.index_check = IndexCheck(services, every_seconds=0)  # type: ignore[attr-defined]
    assert client.get("/readyz").json()["checks"]["index"] == "ok"

    collection_id = _collection_id(services, "ops")
    with services.session_factory() as session:
        ready = sorted(db_documents.ready_chunk_ids(session, collection_id=collection_id))
    services.store.remove(collection_id, ready[:1])  # a vector lost behind SQL's back

    readiness = client.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.headers["retry-after"]
    body = readiness.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["index"] == "inconsistent: collection 'ops' misses 1 ready chunks"
    assert body["checks"]["database"] == "ok" and body["checks"]["chat_model"] == "ok"


def test_the_index_check_is_not_repeated_within_its_interval(client: TestClient, services: Components) -> None:
    wait_ready(client)
    job = upload(client, "ops", "perms.md", CHINESE.encode()).json()
    wait_for_job(client, job["job_id"])
    check = IndexCheck(services, every_seconds=3600)
    assert check.problem() is None
    collection_id = _collection_id(services, "ops")
    services.store.remove(collection_id, sorted(services.store.ids(collection_id))[:1])
    assert check.problem() is None  # the result of the last hour's check
    assert IndexCheck(services, every_seconds=0).problem() == "collection 'ops' misses 1 ready chunks"


def test_a_chat_model_backend_that_does_not_answer_makes_the_service_unready(
    client: TestClient, services: Components
) -> None:
    wait_ready(client)
    services.llm.problem = "the model server cannot be reached (http://vllm:8000, listing its models)"  # type: ignore[attr-defined]
    readiness = client.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json()["checks"]["chat_model"] == (
        "down: the model server cannot be reached (http://vllm:8000, listing its models)"
    )
    services.llm.problem = None  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 200
