"""Transformer model configs read from Hugging Face `config.json` key names.

`load_model("llama-3.1-8b")` reads `workloads/models/llama-3.1-8b.yaml`; a path to a real
`config.json` (or any YAML/JSON with the same keys) works too. Only the shape matters here:
layer counts and widths give every operator's FLOPs and bytes (see `operators.py`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import InputError
from ..paths import MODELS_DIR

# Bytes per element of each storage dtype the deployment may choose for weights or KV.
DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "int2": 0.25}


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder-only transformer, in the units the cost model needs."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    gated_mlp: bool  # SwiGLU-style gate+up (3 matrices) versus fc1/fc2 (2 matrices)
    qkv_bias: bool
    num_experts: int = 1  # MoE: experts per layer (1 = dense)
    experts_per_token: int = 1
    qk_norm: bool = False  # RMSNorm of every query and key head before RoPE (Qwen3)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_params(self) -> int:
        """Weights of one decoder layer (attention + MLP experts + two norms)."""
        attn = self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
        if self.qkv_bias:
            attn += self.q_size + 2 * self.kv_size
        mlp_mats = 3 if self.gated_mlp else 2
        mlp = mlp_mats * self.hidden_size * self.intermediate_size * self.num_experts
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        qk_norm = 2 * self.head_dim if self.qk_norm else 0
        return attn + mlp + router + 2 * self.hidden_size + qk_norm

    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied) plus the final norm."""
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size + self.hidden_size

    def total_params(self) -> int:
        return self.num_layers * self.layer_params() + self.embedding_params()

    def kv_bytes_per_token(self, kv_dtype: str) -> float:
        """KV-cache bytes one token occupies across all layers (K and V)."""
        return 2 * self.num_layers * self.kv_size * DTYPE_BYTES[kv_dtype]


def _get(cfg: dict[str, Any], where: str, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    if default is not None:
        return default
    raise InputError(f"{where}: {keys[0]}: required field is missing (a Hugging Face config.json key)")


def _positive_int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{where}: {key}: {value!r} is not a positive integer")
    return value


# Model types whose attention normalises each query and key head (q_norm, k_norm) before RoPE.
QK_NORM_TYPES = ("qwen3", "qwen3_moe")


def model_from_dict(cfg: dict[str, Any], where: str, name: str | None = None) -> ModelConfig:
    """Build a ModelConfig from config.json keys (OPT's own names included)."""
    hidden = _positive_int(_get(cfg, where, "hidden_size", "d_model"), where, "hidden_size")
    heads = _positive_int(_get(cfg, where, "num_attention_heads", "n_head"), where, "num_attention_heads")
    kv_heads = _positive_int(_get(cfg, where, "num_key_value_heads", default=heads), where, "num_key_value_heads")
    if heads % kv_heads:
        raise InputError(f"{where}: num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads}")
    model_type = str(cfg.get("model_type", "")).lower()
    gated = model_type not in ("opt", "gpt2", "gpt_neox", "falcon", "bloom")
    return ModelConfig(
        name=name or str(cfg.get("name") or cfg.get("_name_or_path") or where),
        hidden_size=hidden,
        intermediate_size=_positive_int(
            _get(cfg, where, "intermediate_size", "ffn_dim", "n_inner"), where, "intermediate_size"
        ),
        num_layers=_positive_int(_get(cfg, where, "num_hidden_layers", "n_layer"), where, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=_positive_int(_get(cfg, where, "head_dim", default=hidden // heads), where, "head_dim"),
        vocab_size=_positive_int(_get(cfg, where, "vocab_size"), where, "vocab_size"),
        max_position_embeddings=_positive_int(
            _get(cfg, where, "max_position_embeddings", "n_positions", default=4096), where, "max_position_embeddings"
        ),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", model_type == "opt")),
        gated_mlp=gated,
        qkv_bias=bool(cfg.get("attention_bias", model_type in ("qwen2", "opt"))),
        num_experts=_positive_int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1, where, "num_local_experts"),
        experts_per_token=_positive_int(cfg.get("num_experts_per_tok") or 1, where, "num_experts_per_tok"),
        qk_norm=model_type in QK_NORM_TYPES,
    )


def model_catalogue() -> dict[str, Path]:
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*.yaml"))}


@lru_cache(maxsize=32)
def load_model(name_or_path: str) -> ModelConfig:
    """A catalogue name (file stem in workloads/models/) or a path to config.json / YAML."""
    path = Path(name_or_path)
    if not path.exists():
        found = model_catalogue().get(name_or_path)
        if found is None:
            known = ", ".join(model_catalogue())
            raise InputError(f"--model {name_or_path}: no such file or catalogue model (known: {known})")
        path = found
    try:
        text = path.read_text()
        cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: malformed {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: expected a mapping of config.json keys")
    return model_from_dict(cfg, str(path), name=_display_name(cfg, path))


def _display_name(cfg: dict[str, Any], path: Path) -> str:
    """The model's name: our `name` key, else the last part of Hugging Face's `_name_or_path`
    (the repository id or the folder it was saved from), else the folder of a file called
    config.json (that is how checkpoints are laid out), else the file's stem."""
    if cfg.get("name"):
        return str(cfg["name"])
    saved_as = PurePosixPath(str(cfg.get("_name_or_path") or "").replace("\\", "/")).name
    if saved_as:
        return saved_as
    return path.resolve().parent.name if path.name == "config.json" else path.stem
