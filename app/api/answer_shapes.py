"""A domain ``Answer`` in wenda's wire shape, shared by /v1/ask, /v1/chat/completions and `wenda ask --json`."""

from __future__ import annotations

from typing import Any

from app.rag.answering import Answer
from app.rag.evidence import evidence_summary
from app.schemas.ask import (
    AskResponse,
    CitationPublic,
    FactCheckPublic,
    FactPublic,
    RefusalPublic,
    RoutePublic,
    SentencePublic,
    UsagePublic,
)


def debug_payload(answer: Answer) -> dict[str, Any]:
    return {
        "messages": [{"role": m.role, "content": m.content} for m in answer.messages],
        "raw_answer": answer.raw_answer,
        "standalone_question": answer.standalone_question,
        "refusal_reason": answer.refusal.detail if answer.refusal else "",
        # What was found, in rank order: scores, ranking priors from ratings, correction similarities.
        "evidence": [
            evidence_summary(e, rank=rank, packed=rank <= answer.passages_used)
            for rank, e in enumerate(answer.evidence, start=1)
        ],
    }


def answer_response(answer: Answer, query_id: str, *, debug: bool) -> AskResponse:
    checked = answer.checked
    return AskResponse(
        query_id=query_id,
        answer=answer.text,
        grounded=answer.grounded,
        refusal=(
            RefusalPublic(reason=answer.refusal.reason.value, detail=answer.refusal.detail)
            if answer.refusal
            else None
        ),
        citations=[
            CitationPublic(
                kind=c.kind.value,
                chunk_id=c.chunk_id,
                document_id=c.document_id,
                source=c.source,
                quote=c.quote,
                start=c.start,
                end=c.end,
                name=c.name or None,
                feedback_id=c.feedback_id,
            )
            for c in (checked.citations if checked else ())
        ],
        sentences=[
            SentencePublic(text=s.text, supported=s.supported, citations=list(s.citations))
            for s in (checked.sentences if checked else ())
        ],
        usage=UsagePublic(
            prompt_tokens=answer.usage.prompt_tokens,
            completion_tokens=answer.usage.completion_tokens,
            total_tokens=answer.usage.total_tokens,
        ),
        model=answer.model,
        route=RoutePublic.model_validate(answer.route.as_dict()) if answer.route else None,
        facts=[FactPublic(name=f.name, value=f.value, source=f.source) for f in answer.facts],
        fact_check=FactCheckPublic.model_validate(
            {**answer.fact_check.as_dict(), "notes": list(answer.fact_notes)}
        ),
        timezone=answer.timezone,
        from_correction=answer.from_correction,
        timings=answer.timings,
        passages_used=answer.passages_used,
        passages_dropped=answer.passages_dropped,
        debug=debug_payload(answer) if debug else None,
    )
