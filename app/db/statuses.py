"""The states documents and jobs move through, and the kinds of job: one definition shared by the ORM models,
the HTTP schemas and the CLI.

StrEnums whose values are the strings stored in SQL and sent over the wire, so a member compares equal to
its plain string (``JobStatus.DONE == "done"``) and code written against the strings keeps working.
"""

from __future__ import annotations

import enum


class DocumentStatus(enum.StrEnum):
    """queued -> processing -> ready | failed; back to queued while its job waits to be retried."""

    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class JobStatus(enum.StrEnum):
    """queued -> running -> done | failed; back to queued (with a not-before time) after a retryable failure."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobKind(enum.StrEnum):
    """What a job does; the worker picks the handler by it."""

    INGEST = "ingest"  # payload: {"document_id": int}
    TRAIN = "train"
    EXPORT = "export"


class FeedbackStatus(enum.StrEnum):
    """A rating alone is ``rating``; a correction is ``pending`` until approved; any feedback can be withdrawn."""

    RATING = "rating"
    PENDING = "pending"
    APPROVED = "approved"
    WITHDRAWN = "withdrawn"
