"""Transformer model configs read from Hugging Face `config.json` key names.

`load_model("llama-3.1-8b")` reads `workloads/models/llama-3.1-8b.yaml`; a path to a real
`config.json` (or any YAML/JSON with the same keys) works too. Only the shape matters here:
`ModelConfig` is the one description of a model (its attention: heads, KV heads, head size,
sliding window, or multi-head latent attention with its latent and RoPE sizes; its feed-forward: dense, or routed experts with shared experts and dense
layers), and `layers.py` derives from it the linear layers that the operators, the parameter
counts, the memory plan and the measuring harness all use.

What the simulator does not model is refused, never misread: a config whose keys describe
latent attention outside DeepSeek's types, interleaved local/global or linear attention, state-space layers
or a multimodal wrapper, or whose `model_type` is not one it reads, is an input error naming
the keys (`unmodelled_features`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import InvalidFile
from ..paths import MODELS_DIR, file_stamp, shipped
from ..workloads.trace import MAX_TOKENS
from .layers import layer_small_params, linear_params

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
    num_experts: int = 1  # MoE: routed experts per MoE layer (1 = dense)
    experts_per_token: int = 1  # MoE: experts each token is routed to (top-k)
    qk_norm: bool = False  # RMSNorm of every query and key head before RoPE (Qwen3)
    moe_intermediate_size: int = 0  # width of one routed expert (0: intermediate_size, as Mixtral)
    shared_expert_intermediate_size: int = 0  # the always-on shared expert(s) of an MoE layer, summed
    shared_expert_gate: bool = False  # a sigmoid gate on the shared expert's output (Qwen2-MoE)
    moe_layers: int = -1  # layers with routed experts (-1: all of them when num_experts > 1)
    sliding_window: int = 0  # windowed layers attend to at most this many tokens (0: full attention)
    window_layers: int = -1  # the last this many layers have the window, the others full attention (-1: all)
    # Multi-head latent attention (DeepSeek-V2/V3): each token caches one latent of
    # kv_lora_rank values and a RoPE key of qk_rope_head_dim shared by every head, from which
    # each head's key (head_dim = nope + rope) and value (v_head_dim) are up-projected. 0: not MLA.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # MLA queries through a low-rank down/up projection (0: one q_proj)
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # The storage type of the checkpoint's linear weights, from its quantization_config (as
    # vLLM loads them: an fp8 checkpoint serves fp8 weights); None where the config names a
    # quantization this module does not read. `quantization` says what was read.
    checkpoint_weight_dtype: str | None = "bf16"
    quantization: str = ""
    # The longest context the engine serves by default and at most: max_position_embeddings,
    # extended by rope_scaling as vLLM derives it (`context_length`); 0: max_position_embeddings.
    max_context: int = 0

    def __post_init__(self) -> None:
        if not self.max_context:
            object.__setattr__(self, "max_context", self.max_position_embeddings)
        if self.moe_layers < 0:
            object.__setattr__(self, "moe_layers", self.num_layers if self.num_experts > 1 else 0)
        if self.window_layers < 0 or not self.sliding_window:
            object.__setattr__(self, "window_layers", self.num_layers if self.sliding_window else 0)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1 and self.moe_layers > 0

    @property
    def dense_layers(self) -> int:
        """Layers whose feed-forward is one dense MLP (all of a dense model's)."""
        return self.num_layers - self.moe_layers

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def attention_kind(self) -> str:
        """mha (a KV head per query head), mqa (one KV head), gqa (groups of query heads) or
        mla (one latent per token, up-projected to every head)."""
        if self.is_mla:
            return "mla"
        if self.num_kv_heads == self.num_heads:
            return "mha"
        return "mqa" if self.num_kv_heads == 1 else "gqa"

    def heads_per_device(self, tp: int) -> int:
        return max(1, self.num_heads // tp)

    def kv_heads_per_device(self, tp: int) -> int:
        """KV heads each of `tp` devices holds: split while there are enough, else replicated."""
        return max(1, self.num_kv_heads // tp)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied) plus the final norm."""
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size + self.hidden_size

    def total_params(self) -> int:
        """Every weight of the checkpoint: the layers' linear and small parameters
        (`layers.py`, on one device) and the embeddings."""
        return int(linear_params(self, 1, self.dense_layers, self.moe_layers)
                   + self.num_layers * layer_small_params(self, 1) + self.embedding_params())

    @property
    def rotary_dim(self) -> int:
        """Values per head that RoPE rotates: the whole head, or MLA's RoPE part."""
        return self.qk_rope_head_dim if self.is_mla else self.head_dim

    @property
    def latent_size(self) -> int:
        """Values an MLA layer caches per token: the latent and the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def kv_bytes_per_token(self, kv_dtype: str, tp: int = 1, layers: int | None = None) -> float:
        """KV-cache bytes one token occupies on one of `tp` devices over `layers` layers
        (default: all): K and V of its KV heads, or with MLA the latent, which every device
        holds whole (vLLM replicates it over tensor parallelism: every head reads all of it)."""
        layers = self.num_layers if layers is None else layers
        if self.is_mla:
            return layers * self.latent_size * DTYPE_BYTES[kv_dtype]
        return 2 * layers * self.kv_heads_per_device(tp) * self.head_dim * DTYPE_BYTES[kv_dtype]


def _get(cfg: dict[str, Any], where: str, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if key in cfg and cfg[key] is not None:
            return cfg[key]
    if default is not None:
        return default
    raise InvalidFile(f"{where}: {keys[0]}: required field is missing (a Hugging Face config.json key)")


def _positive_int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidFile(f"{where}: {key}: {value!r} is not a positive integer")
    return value


def _count(cfg: dict[str, Any], where: str, key: str) -> int:
    """An optional count (absent or null: 0), refused when it is not a whole number >= 0."""
    value = cfg.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidFile(f"{where}: {key}: {value!r} is not a whole number >= 0")
    return value


def _flag(cfg: dict[str, Any], where: str, key: str, default: bool) -> bool:
    """An optional true/false key (absent or null: `default`); a number or a string is refused,
    since reading `tie_word_embeddings: "false"` as true would double-count a matrix."""
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidFile(f"{where}: {key}: {value!r} is not true or false")
    return value


# Model types whose attention normalises each query and key head (q_norm, k_norm) before RoPE.
QK_NORM_TYPES = ("qwen3", "qwen3_moe")
# The `model_type`s whose config.json keys this module reads as their checkpoints mean them
# (a config without one is read as a Llama-style decoder).
READ_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "opt", "deepseek_v2",
              "deepseek_v3")
MLA_TYPES = ("deepseek_v2", "deepseek_v3")  # the types whose kv_lora_rank, q_lora_rank... mean MLA as read here
NON_GATED_TYPES = ("opt",)  # fc1/fc2 MLPs; every other type read here has a SwiGLU gate


def _sliding(cfg: dict[str, Any], model_type: str, where: str) -> tuple[int, int]:
    """The attention window and how many layers (the last ones) have it; (0, 0): full
    attention everywhere. Qwen configs state a window that applies only with
    `use_sliding_window: true` (off by default, as in their configuration classes) and only to
    the layers after the first `max_window_layers`; Mistral's applies to every layer."""
    window = _count(cfg, where, "sliding_window")
    enabled = _flag(cfg, where, "use_sliding_window", not model_type.startswith("qwen"))
    layers = cfg.get("num_hidden_layers", 1)
    full_layers = min(_count(cfg, where, "max_window_layers"), layers) if model_type.startswith("qwen") else 0
    if not (window and enabled) or full_layers == layers:
        return 0, 0
    return window, layers - full_layers


# quant_method values of a quantization_config, as vLLM names them, whose weights are fp8
FP8_METHODS = ("fp8", "fbgemm_fp8")
# weight-only integer quantizations, their bits read from `bits` (GPTQ, AWQ and their Marlin kernels)
INT_METHODS = ("awq", "awq_marlin", "gptq", "gptq_marlin")
INT_DTYPES = {4: "int4", 8: "int8"}


def checkpoint_weights(cfg: dict[str, Any], where: str) -> tuple[str | None, str]:
    """The storage type of a checkpoint's linear weights and how it was read, from
    config.json's `quantization_config`: none, bf16; fp8 (per tensor, or block-scaled with
    `weight_block_size`), fp8; GPTQ/AWQ at 4 or 8 bits, int4/int8; compressed-tensors, its
    weights' `num_bits` and `type`. Anything else is (None, what it is): the run must then
    name weight_dtype itself rather than have the weights read at the wrong size."""
    quant = cfg.get("quantization_config")
    if quant is None:
        return "bf16", ""
    if not isinstance(quant, dict):
        raise InvalidFile(f"{where}: quantization_config: {quant!r} is not a mapping")
    method = str(quant.get("quant_method") or "").lower()
    if method in FP8_METHODS:
        blocks = quant.get("weight_block_size")
        if blocks is None:
            return "fp8", "fp8"
        if not isinstance(blocks, list) or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0
                                                   for b in blocks):
            raise InvalidFile(f"{where}: quantization_config.weight_block_size: {blocks!r} is not a list of sizes")
        return "fp8", f"fp8, {' x '.join(map(str, blocks))} blocks"
    if method in INT_METHODS and quant.get("bits") in INT_DTYPES:
        return INT_DTYPES[quant["bits"]], f"{method} {quant['bits']}-bit"
    if method == "compressed-tensors":
        groups = quant.get("config_groups") or {}
        kinds = {(w.get("num_bits"), w.get("type")) for group in (groups.values() if isinstance(groups, dict) else ())
                 if isinstance(group, dict) and isinstance(w := group.get("weights"), dict)}
        if len(kinds) == 1:
            bits, kind = kinds.pop()
            if (bits, kind) == (8, "float"):
                return "fp8", "compressed-tensors fp8"
            if kind == "int" and bits in INT_DTYPES:
                return INT_DTYPES[bits], f"compressed-tensors int{bits}"
        return None, f"compressed-tensors weights {sorted(kinds, key=str) or 'unstated'}"
    return None, f"quant_method {method or '(none)'!r}"


# RoPE scalings whose factor does not lengthen the context vLLM serves: their
# max_position_embeddings already is the extended length (Llama 3.1's llama3, Phi-3's longrope)
NATIVE_LENGTH_ROPE = ("su", "longrope", "llama3")


def context_length(cfg: dict[str, Any], positions: int, where: str) -> int:
    """The context vLLM serves (its derived max_model_len): `positions`, times rope_scaling's
    `factor` for the scalings that extend it, and for YaRN counted from its
    `original_max_position_embeddings` (Qwen2.5's 32,768 x 4 = 131,072)."""
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return positions
    if not isinstance(scaling, dict):
        raise InvalidFile(f"{where}: rope_scaling: {scaling!r} is not a mapping")
    kind = scaling.get("rope_type") or scaling.get("type")
    if not isinstance(kind, str):
        raise InvalidFile(f"{where}: rope_scaling: {scaling!r} names no rope_type (or type)")
    if kind in NATIVE_LENGTH_ROPE:
        return positions
    factor = scaling.get("factor")
    factor = 1.0 if factor is None else factor
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise InvalidFile(f"{where}: rope_scaling.factor: {factor!r} is not a positive number")
    if kind == "yarn":
        positions = _positive_int(scaling.get("original_max_position_embeddings"), where,
                                  "rope_scaling.original_max_position_embeddings")
    if positions * factor > MAX_TOKENS:
        raise InvalidFile(f"{where}: rope_scaling.factor: {factor!r} makes a context of {positions * factor:.3g} tokens, "
                          f"more than any model's (at most {MAX_TOKENS:,})")
    return int(positions * factor)


def unmodelled_features(cfg: dict[str, Any]) -> list[str]:
    """What `cfg` describes that the simulator does not model, each with the keys that say so."""
    found = []
    model_type = str(cfg.get("model_type") or "llama").lower()
    if (cfg.get("kv_lora_rank") or cfg.get("q_lora_rank")) and model_type not in MLA_TYPES:
        found.append(f"multi-head latent attention (kv_lora_rank, q_lora_rank) in a {model_type!r} model "
                     f"(read for model_type {' or '.join(MLA_TYPES)})")
    kinds = set(cfg.get("layer_types") or ()) - {"full_attention"}
    if kinds:
        found.append(f"per-layer attention kinds {sorted(kinds)} (layer_types)")
    for key, what in (("sliding_window_pattern", "interleaved local and global attention"),
                      ("full_attention_interval", "interleaved linear and full attention"),
                      ("attention_chunk_size", "chunked local attention"),
                      ("hybrid_override_pattern", "state-space (Mamba) layers"),
                      ("ssm_state_size", "state-space (Mamba) layers"),
                      ("text_config", "a multimodal wrapper (the language model is its text_config)")):
        if cfg.get(key):
            found.append(f"{what} ({key})")
    if (cfg.get("moe_layer_freq") or 1) != 1:
        found.append("MoE every few layers (moe_layer_freq)")
    if cfg.get("word_embed_proj_dim") not in (None, cfg.get("hidden_size")):
        found.append("embeddings projected in and out of the hidden size (word_embed_proj_dim)")
    return found


def _moe_layers(cfg: dict[str, Any], layers: int, experts: int, where: str) -> int:
    """Layers with routed experts: all, less DeepSeek's first_k_dense_replace dense ones, or
    Qwen-MoE's every decoder_sparse_step-th layer not in mlp_only_layers."""
    if experts <= 1:
        return 0
    dense_first = _count(cfg, where, "first_k_dense_replace")
    step = _count(cfg, where, "decoder_sparse_step") or 1
    only_mlp = cfg.get("mlp_only_layers") or []
    if not isinstance(only_mlp, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only_mlp):
        raise InvalidFile(f"{where}: mlp_only_layers: {only_mlp!r} is not a list of layer indices")
    only_mlp = set(only_mlp)
    return sum(1 for i in range(dense_first, layers) if (i + 1) % step == 0 and i not in only_mlp)


def model_from_dict(cfg: dict[str, Any], where: str, name: str | None = None) -> ModelConfig:
    """Build a ModelConfig from config.json keys (OPT's own names included); refuse what it
    cannot model rather than misread it."""
    model_type = str(cfg.get("model_type") or "llama").lower()
    unmodelled = unmodelled_features(cfg)
    if unmodelled:
        raise InvalidFile(f"{where}: not modelled: {'; '.join(unmodelled)}. The simulator costs dense and "
                         "mixture-of-experts decoders with full or sliding-window attention; see docs/models.md")
    if model_type not in READ_TYPES:
        raise InvalidFile(f"{where}: model_type {model_type!r} is not one the simulator reads (known: "
                         f"{', '.join(READ_TYPES)}); for a decoder laid out like Llama, set model_type: llama "
                         "in a copy of the config")
    hidden = _positive_int(_get(cfg, where, "hidden_size", "d_model"), where, "hidden_size")
    heads = _positive_int(_get(cfg, where, "num_attention_heads", "n_head"), where, "num_attention_heads")
    kv_heads = _positive_int(_get(cfg, where, "num_key_value_heads", default=heads), where, "num_key_value_heads")
    if heads % kv_heads:
        raise InvalidFile(f"{where}: num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads}")
    layers = _positive_int(_get(cfg, where, "num_hidden_layers", "n_layer"), where, "num_hidden_layers")
    experts = _positive_int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts")
                            or 1, where, "num_local_experts")
    moe_inter = _count(cfg, where, "moe_intermediate_size")
    shared = _count(cfg, where, "shared_expert_intermediate_size") or _count(cfg, where, "n_shared_experts") * moe_inter
    top_k = _positive_int(cfg.get("num_experts_per_tok") or 1, where, "num_experts_per_tok")
    if top_k > experts:
        raise InvalidFile(f"{where}: num_experts_per_tok: {top_k} is more than the {experts} experts a layer has")
    window, window_layers = _sliding(cfg, model_type, where)
    weights_dtype, quantization = checkpoint_weights(cfg, where)
    # vLLM assumes 2,048 where a config states no length
    positions = _positive_int(_get(cfg, where, "max_position_embeddings", "n_positions", default=2048), where,
                              "max_position_embeddings")
    latent = _latent_attention(cfg, where) if model_type in MLA_TYPES else {}
    if latent:
        kv_heads = 1  # one latent per token serves every head (config.json's num_key_value_heads is unused)
        head_dim = latent.pop("head_dim")
    else:
        head_dim = _positive_int(_get(cfg, where, "head_dim", default=hidden // heads), where, "head_dim")
    return ModelConfig(
        name=name or str(cfg.get("name") or cfg.get("_name_or_path") or where),
        hidden_size=hidden,
        intermediate_size=_positive_int(
            _get(cfg, where, "intermediate_size", "ffn_dim", "n_inner"), where, "intermediate_size"
        ),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_positive_int(_get(cfg, where, "vocab_size"), where, "vocab_size"),
        max_position_embeddings=positions,
        max_context=context_length(cfg, positions, where),
        tie_word_embeddings=_flag(cfg, where, "tie_word_embeddings", model_type == "opt"),
        gated_mlp=model_type not in NON_GATED_TYPES,
        qkv_bias=_flag(cfg, where, "attention_bias", model_type in ("qwen2", "qwen2_moe", "opt")),
        num_experts=experts,
        experts_per_token=top_k,
        qk_norm=model_type in QK_NORM_TYPES,
        moe_intermediate_size=moe_inter,
        shared_expert_intermediate_size=shared,
        shared_expert_gate=model_type == "qwen2_moe" and bool(shared),
        moe_layers=_moe_layers(cfg, layers, experts, where),
        sliding_window=window,
        window_layers=window_layers,
        checkpoint_weight_dtype=weights_dtype,
        quantization=quantization,
        **latent,
    )


def _latent_attention(cfg: dict[str, Any], where: str) -> dict[str, int]:
    """DeepSeek's MLA keys as ModelConfig fields: the query/key head size is the part without
    RoPE plus the RoPE part (qk_nope_head_dim + qk_rope_head_dim); q_lora_rank is null where
    the queries have one full projection (DeepSeek-V2-Lite)."""
    fields = {key: _positive_int(_get(cfg, where, key), where, key)
              for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")}
    q_lora = cfg.get("q_lora_rank")
    return {"kv_lora_rank": fields["kv_lora_rank"], "qk_rope_head_dim": fields["qk_rope_head_dim"],
            "v_head_dim": fields["v_head_dim"], "head_dim": fields["qk_nope_head_dim"] + fields["qk_rope_head_dim"],
            "q_lora_rank": _positive_int(q_lora, where, "q_lora_rank") if q_lora else 0}


def model_catalogue() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped(MODELS_DIR).glob("*.yaml"))}


@lru_cache(maxsize=1)
def _catalogue_ids() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each catalogue model's Hugging Face ids, read once: its own `source`, and the releases
    its `same_config` lists (post-trained versions whose config.json has the same architecture
    keys and values, so that `--model meta-llama/Llama-3.1-8B-Instruct` reads as vLLM would
    read that checkpoint)."""
    ids = {}
    for name, path in model_catalogue().items():
        cfg = yaml.safe_load(path.read_text()) or {}
        ids[name] = (str(cfg.get("source") or ""), tuple(str(i) for i in cfg.get("same_config") or ()))
    return ids


@lru_cache(maxsize=1)
def _hugging_face_ids() -> dict[str, tuple[str, bool]]:
    """By Hugging Face id (lower case): the catalogue model it names, and whether it is that
    model's own `source` rather than a `same_config` release."""
    ids = {}
    for name, (source, releases) in _catalogue_ids().items():
        ids.update({release.lower(): (name, False) for release in releases})
        if source:
            ids[source.lower()] = (name, True)
    return ids


def catalogue_sources() -> dict[str, str]:
    """Each catalogue model's Hugging Face id (`source`), by catalogue name."""
    return {name: source for name, (source, _) in _catalogue_ids().items()}


def catalogue_name(hf_id: str) -> str | None:
    """The catalogue model a Hugging Face id names (its `source` or a `same_config` release)."""
    found = _hugging_face_ids().get(hf_id.lower())
    return found[0] if found else None


def load_model(name_or_path: str) -> ModelConfig:
    """A catalogue name (file stem in workloads/models/) or a Hugging Face id of one, a path to
    config.json / YAML, or a checkpoint's folder (its config.json, as vLLM reads it)."""
    path = Path(name_or_path)
    if not path.exists():
        name, own = ((name_or_path, True) if name_or_path in model_catalogue()
                     else _hugging_face_ids().get(name_or_path.lower(), (None, True)))
        if name is None:
            known = ", ".join(model_catalogue())
            offline = (" (a Hugging Face id is not downloaded: give the checkpoint's config.json or folder)"
                       if "/" in name_or_path else "")
            raise InvalidFile(f"--model {name_or_path}: no such file or catalogue model{offline} (known: {known})")
        model = load_model(str(model_catalogue()[name]))
        # a release under its own name (an Instruct model) keeps that name in the outputs
        return model if own else dataclasses.replace(model, name=PurePosixPath(name_or_path).name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidFile(f"--model {name_or_path}: a folder without a config.json (give the checkpoint's "
                              "folder, its config.json, or a catalogue name)")
        path = path / "config.json"
    try:
        return _load_model_file(path.resolve(), *file_stamp(path))
    except OSError as exc:
        raise InvalidFile(f"{path}: cannot read ({exc.strerror})") from None


@lru_cache(maxsize=32)
def _load_model_file(path: Path, mtime_ns: int, size: int) -> ModelConfig:
    """The model of one file as it is now (mtime_ns and size key the cache: paths.file_stamp)."""
    try:
        text = path.read_text()
        cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidFile(f"{path}: malformed {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from None
    if not isinstance(cfg, dict):
        raise InvalidFile(f"{path}: expected a mapping of config.json keys")
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
