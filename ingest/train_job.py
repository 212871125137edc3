"""The train job: fine-tune a LoRA adapter on an SFT file (``ingest.training``), then register it.

The payload names the adapter, the data and the hyper-parameters; the adapter directory is written under the
data dir. Once training succeeded the directory is checked against the base model like any registration
(``app.rag.adapters.inspect_adapter``) and its row goes into the model registry in the transaction that marks
the job done: API processes see it at their next registry read and load it on its first request. A job
retried after training finished (the worker stopped before the row was written) registers the directory it
finds instead of training again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import adapters as db_adapters
from app.db.models import ModelAdapter
from app.rag.adapters import WEIGHTS_FILE, AdapterSpec, inspect_adapter, projection_shapes
from app.rag.errors import AdapterRejectedError
from app.rag.llm_local import prepare_bundled_model
from app.rag.training_data import TrainingDataError
from ingest.pipeline import ProgressCallback
from ingest.training import TrainingCancelledError, TrainingFailedError, TrainingSpec, run_training
from ingest.worker import JobFailedError, JobHandler, JobOutcome

logger = logging.getLogger(__name__)

# Where the adapter's registry row says it came from.
TRAINED = "trained"


def _complete(directory: Path) -> bool:
    return (directory / "adapter_config.json").is_file() and (directory / WEIGHTS_FILE).is_file()


def train_handler(
    *,
    session_factory: sessionmaker[Session],
    base_model_dir: Path,
    base_names: Sequence[str],
    max_rank: int,
    timeout_seconds: float | None,
    threads: int = 0,
    prepare_bundled: bool = False,
) -> JobHandler:
    """The handler of ``train`` jobs. ``base_names``: what an adapter's config may call the base model;
    ``prepare_bundled``: ``base_model_dir`` is the bundled model's folder, prepared here if it is not yet."""

    def run(payload: Mapping[str, Any], progress: ProgressCallback) -> JobOutcome:
        try:
            name = str(payload["name"])
            output_dir = Path(payload["output_dir"])
            spec = TrainingSpec(
                data=Path(payload["data"]),
                base_model_dir=base_model_dir,
                output_dir=output_dir,
                steps=int(payload["steps"]),
                rank=int(payload["rank"]),
                learning_rate=float(payload["learning_rate"]),
                threads=threads,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise JobFailedError(f"this train job's payload is incomplete: {error}") from error
        progress("train", 0.0)
        if prepare_bundled:
            prepare_bundled_model(base_model_dir)
        outcome: dict[str, Any] = {"adapter": name, "path": str(output_dir)}
        if _complete(output_dir):
            logger.info("train job for %s: %s is already trained; registering it", name, output_dir)
        else:
            # A run killed with its machine leaves its hidden staging folder behind; one job trains a name.
            for stale in output_dir.parent.glob(f".{output_dir.name}.*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            try:
                result = run_training(
                    spec, lambda fraction, _metrics: progress("train", fraction), timeout_seconds=timeout_seconds
                )
            except TrainingDataError as error:
                raise JobFailedError(error.message) from error
            except TrainingCancelledError as error:
                raise JobFailedError(f"training stopped: {error}") from error
            except TrainingFailedError as error:
                # Training fails the same way when tried again (bad data, out of memory): no retries.
                raise JobFailedError(f"training failed: {error}") from error
            except (FileExistsError, FileNotFoundError) as error:
                # The adapter directory appeared meanwhile, or the base model folder is not there.
                raise JobFailedError(str(error)) from error
            outcome.update(
                steps=result.steps,
                examples=result.examples,
                final_loss=result.final_loss,
                seconds=round(result.seconds, 1),
            )
        progress("register", 1.0)
        adapter = _inspect(output_dir, name, payload, base_model_dir, base_names, max_rank)
        with session_factory() as session:
            if db_adapters.get_adapter(session, name=name) is not None:
                raise JobFailedError(
                    f"the name {name!r} was registered while this job trained; the adapter is in {output_dir}: "
                    "register it under another name with POST /v1/models/adapters"
                )

        def register(session: Session) -> bool:
            if db_adapters.get_adapter(session, name=name) is None:  # not taken in the moment since
                db_adapters.add_adapter(session, adapter=_row(adapter))
            else:
                logger.error("train job: the name %s was registered meanwhile; %s is not", name, output_dir)
            return True

        return JobOutcome(timings={"train": float(outcome.get("seconds", 0.0))}, record=register, result=outcome)

    return run


def _inspect(
    output_dir: Path,
    name: str,
    payload: Mapping[str, Any],
    base_model_dir: Path,
    base_names: Sequence[str],
    max_rank: int,
) -> AdapterSpec:
    try:
        config = json.loads((base_model_dir / "config.json").read_text(encoding="utf-8"))
        return inspect_adapter(
            output_dir,
            name=name,
            base_names=[*base_names, str(base_model_dir)],
            max_rank=max_rank,
            base_shapes=projection_shapes(config),
            description=str(payload.get("description", "")),
            examples=[str(e) for e in payload.get("examples", [])],
        )
    except AdapterRejectedError as error:
        raise JobFailedError(f"the trained adapter cannot be served: {error.message}") from error


def _row(spec: AdapterSpec) -> ModelAdapter:
    return ModelAdapter(**spec.stored_fields(), source=TRAINED)
