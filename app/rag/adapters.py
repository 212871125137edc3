"""LoRA adapters: what one is, and the check that an adapter directory can be served on this server's base model.

An adapter directory is what PEFT's ``save_pretrained`` writes and what vLLM's ``--lora-modules`` reads:
``adapter_config.json`` plus ``adapter_model.safetensors``. The check reads both before anything is loaded,
so that a wrong adapter is refused at registration with the mismatch named, not at the first question.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rag.errors import AdapterRejectedError

# The projections of a Llama/Qwen-style decoder, which both backends apply LoRA to. Embeddings and the LM head
# need extra vLLM flags and PEFT's modules_to_save, so adapters touching them are refused.
SUPPORTED_TARGET_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
)
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A request's `model` with this value asks for routing, so no adapter may be called so.
AUTO = "auto"
WEIGHTS_FILE = "adapter_model.safetensors"
_LORA_KEY = re.compile(r"\.(?P<module>[A-Za-z0-9_]+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


@dataclass(frozen=True)
class AdapterSpec:
    """A registered adapter: where its files are and what it is for."""

    name: str
    path: str
    base_model: str  # as the adapter's own config names it
    rank: int
    target_modules: tuple[str, ...]
    description: str = ""
    examples: tuple[str, ...] = ()

    def stored_fields(self) -> dict[str, Any]:
        """The registry row's columns for this adapter, as plain values (lists, not tuples)."""
        return {
            "name": self.name,
            "path": self.path,
            "base_model": self.base_model,
            "rank": self.rank,
            "target_modules": list(self.target_modules),
            "description": self.description,
            "examples": list(self.examples),
        }


def model_key(name: str) -> str:
    """The comparable form of a model name or path: its last component, lower case.
    ``Qwen/Qwen2.5-Coder-0.5B-Instruct`` and ``/data/models/qwen2.5-coder-0.5b-instruct`` are one model."""
    return Path(name.rstrip("/\\")).name.lower()


def check_adapter_name(name: str, *, base_model: str) -> None:
    if not ADAPTER_NAME.match(name):
        raise AdapterRejectedError(
            "an adapter name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param="name",
        )
    if name in (AUTO, base_model):
        raise AdapterRejectedError(f"{name!r} is reserved: it names the base model or routing", param="name")


def projection_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of a decoder, from its ``config.json``."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    intermediate = int(config["intermediate_size"])
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, intermediate),
        "up_proj": (hidden, intermediate),
        "down_proj": (intermediate, hidden),
    }


def inspect_adapter(
    path: Path,
    *,
    name: str,
    base_names: Sequence[str],
    max_rank: int,
    base_shapes: Mapping[str, tuple[int, int]] | None = None,
    description: str = "",
    examples: Sequence[str] = (),
) -> AdapterSpec:
    """The adapter at ``path`` as a spec, or ``AdapterRejectedError`` naming what does not fit: not a LoRA
    adapter, trained on another base model, a rank above ``max_rank``, modules we do not adapt, weights that
    are missing, unreadable, not finite, or shaped for another model (``base_shapes``, when the base's
    architecture is known here)."""
    if not path.is_absolute():
        raise AdapterRejectedError(f"path must be absolute: {str(path)!r}", param="path")
    if not path.is_dir():
        raise AdapterRejectedError(f"no adapter directory at {str(path)!r}", param="path")
    config = _read_config(path / "adapter_config.json")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterRejectedError(
            f"adapter_config.json: peft_type is {config.get('peft_type')!r}; only LORA adapters are served",
            param="path",
        )
    base_model = str(config.get("base_model_name_or_path") or "")
    accepted = {model_key(n) for n in base_names if n}
    if model_key(base_model) not in accepted:
        raise AdapterRejectedError(
            f"adapter_config.json: the adapter was trained on {base_model or 'an unnamed model'!r}, but this "
            f"server's base model is {base_names[0]!r} (accepted names: {', '.join(sorted(accepted))})",
            param="path",
        )
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterRejectedError(f"adapter_config.json: r must be a positive integer, not {rank!r}", param="path")
    if rank > max_rank:
        raise AdapterRejectedError(
            f"adapter_config.json: rank {rank} is above the largest supported rank {max_rank} "
            "(models.max_lora_rank)",
            param="path",
        )
    targets = config.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets:
        raise AdapterRejectedError(
            "adapter_config.json: target_modules must be a list of module names "
            f"(one of {', '.join(sorted(SUPPORTED_TARGET_MODULES))})",
            param="path",
        )
    unsupported = sorted(str(t) for t in targets if t not in SUPPORTED_TARGET_MODULES)
    if unsupported:
        raise AdapterRejectedError(
            f"adapter_config.json: target modules {', '.join(unsupported)} are not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_TARGET_MODULES))})",
            param="path",
        )
    if config.get("modules_to_save"):
        raise AdapterRejectedError(
            "adapter_config.json: modules_to_save (fully trained layers) is not supported", param="path"
        )
    _check_weights(path / WEIGHTS_FILE, rank=rank, targets=set(targets), base_shapes=base_shapes)
    return AdapterSpec(
        name=name,
        path=str(path),
        base_model=base_model,
        rank=rank,
        target_modules=tuple(sorted(str(t) for t in targets)),
        description=description,
        examples=tuple(examples),
    )


def _read_config(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise AdapterRejectedError(f"no adapter_config.json in {str(config_path.parent)!r}", param="path")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterRejectedError(f"adapter_config.json is not readable JSON: {error}", param="path") from error
    if not isinstance(config, dict):
        raise AdapterRejectedError("adapter_config.json is not a JSON object", param="path")
    return config


def _check_weights(
    weights: Path, *, rank: int, targets: set[str], base_shapes: Mapping[str, tuple[int, int]] | None
) -> None:
    if not weights.is_file():
        raise AdapterRejectedError(
            f"no {WEIGHTS_FILE} beside adapter_config.json (older .bin weights are not supported)", param="path"
        )
    from safetensors import SafetensorError, safe_open

    try:
        # torch reads bf16 weights, numpy does not; an adapter is small enough to read whole, which also
        # finds a file cut short after its header.
        with safe_open(str(weights), framework="pt") as tensors:
            found = 0
            for key in tensors.keys():  # noqa: SIM118 - safe_open is not a Mapping
                match = _LORA_KEY.search(key)
                if match is None:
                    continue
                found += 1
                tensor = tensors.get_tensor(key)
                _check_tensor(key, tuple(tensor.shape), match["module"], match["part"], rank, targets, base_shapes)
                if not math.isfinite(float(tensor.float().abs().sum())):
                    raise AdapterRejectedError(f"{WEIGHTS_FILE}: {key} holds NaN or infinite values", param="path")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise AdapterRejectedError(f"{WEIGHTS_FILE} is unreadable or corrupt: {error}", param="path") from error
    if not found:
        raise AdapterRejectedError(f"{WEIGHTS_FILE} holds no LoRA weights", param="path")


def _check_tensor(
    key: str,
    shape: tuple[int, ...],
    module: str,
    part: str,
    rank: int,
    targets: set[str],
    base_shapes: Mapping[str, tuple[int, int]] | None,
) -> None:
    if module not in targets or len(shape) != 2:
        raise AdapterRejectedError(
            f"{WEIGHTS_FILE}: {key} does not match adapter_config.json's target_modules and rank", param="path"
        )
    # lora_A is (rank, in_features), lora_B is (out_features, rank).
    size, low_rank = (shape[1], shape[0]) if part == "A" else (shape[0], shape[1])
    if low_rank != rank:
        raise AdapterRejectedError(
            f"{WEIGHTS_FILE}: {key} has rank {low_rank}, adapter_config.json says {rank}", param="path"
        )
    if base_shapes is not None and module in base_shapes:
        expected = base_shapes[module][0 if part == "A" else 1]
        if size != expected:
            side = "input" if part == "A" else "output"
            raise AdapterRejectedError(
                f"{WEIGHTS_FILE}: {key} has {side} size {size}, but the base model's {module} has {expected}: "
                "the adapter was made for another model",
                param="path",
            )
