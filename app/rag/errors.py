"""Typed domain errors. ``app.errors`` maps each class to an HTTP status and the error envelope."""

from __future__ import annotations


class WendaError(Exception):
    """Base of every error a user can act on; ``message`` is shown to them verbatim."""

    code = "wenda_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class NotFoundError(WendaError):
    code = "not_found"


class InvalidInputError(WendaError):
    code = "invalid_input"


class ConflictError(WendaError):
    """The request clashes with what exists (a name already taken)."""

    code = "conflict"


class AdapterRejectedError(WendaError):
    """A LoRA adapter cannot be served on this server's base model; the message names the mismatch."""

    code = "adapter_rejected"


class PayloadTooLargeError(WendaError):
    code = "payload_too_large"


class UnsupportedFileTypeError(WendaError):
    code = "unsupported_file_type"


class DocumentParseError(WendaError):
    """The file was accepted but cannot be turned into text (broken, encrypted, image-only, too slow)."""

    code = "parse_failed"


class DocumentTooLargeError(WendaError):
    """The document's text is past a per-document limit (characters, chunks) in the settings."""

    code = "document_too_large"


class NotReadyError(WendaError):
    code = "not_ready"


class UpstreamError(WendaError):
    """The model server failed; the message says how, never with its raw body."""

    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    code = "upstream_timeout"


class UpstreamUnavailableError(UpstreamError):
    code = "upstream_unavailable"


class UpstreamBadResponseError(UpstreamError):
    code = "upstream_bad_response"


class AdapterUnavailableError(UpstreamError):
    """The backend cannot serve a LoRA adapter: its files do not load, or the model server neither has it
    nor loads adapters at run time. The message says which."""

    code = "adapter_unavailable"
