"""LoRA adapter directories for tests: small hand-written ones (the files PEFT writes, for a server that never
loads their weights) and real PEFT adapters of the bundled model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path


def write_adapter(
    directory: Path,
    *,
    base_model: str = "ok",
    rank: int = 4,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    hidden: int = 64,
    peft_type: str = "LORA",
) -> Path:
    """adapter_config.json and adapter_model.safetensors as PEFT saves them, for a tiny model of width
    ``hidden`` with one layer."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": peft_type,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(targets),
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    tensors = {}
    for module in targets:
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden) * 0.01
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(hidden, rank) * 0.01
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


def make_peft_adapter(base_dir: Path, directory: Path, *, seed: int, rank: int = 4) -> Path:
    """A real rank-``rank`` LoRA adapter of the model at ``base_dir``, with random non-zero weights large
    enough to change its greedy output (PEFT's default initialisation would leave the output unchanged)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    from app.rag.llm_local import MODEL_CONSTRUCTION_LOCK

    with MODEL_CONSTRUCTION_LOCK:
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
    config = LoraConfig(
        r=rank, lora_alpha=4 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(directory))
    return directory


def copy_for_other_base(adapter: Path, directory: Path, base_model: str = "meta-llama/Llama-3.2-1B") -> Path:
    """The same adapter claiming to be trained on another base model."""
    shutil.copytree(adapter, directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_model
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory
