"""One description per model: parameter counts, KV bytes and layer shapes from real configs,
and configs the simulator does not model refused with the keys that say so.

The configs below are the architecture keys of the models' Hugging Face `config.json`
(repository named beside each); the parameter counts are the ones their model cards publish.
"""
from __future__ import annotations

import json

import pytest

from simulator.errors import InputError
from simulator.models.config import load_model, model_from_dict
from simulator.models.layers import DENSE, MOE, linear_layers, stage_layer_kinds
from simulator.models.operators import Precision, Sharding, dense_ops
from validation.shapes import layer_gemms

# mistralai/Mixtral-8x7B-v0.1
MIXTRAL_8X7B = {
    "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
    "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False, "sliding_window": None,
}
# Qwen/Qwen1.5-MoE-A2.7B
QWEN15_MOE = {
    "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
    "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 151936, "max_position_embeddings": 8192,
    "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "tie_word_embeddings": False, "sliding_window": 32768, "use_sliding_window": False,
}
# Qwen/Qwen3-30B-A3B
QWEN3_30B_A3B = {
    "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
    "max_position_embeddings": 40960, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "tie_word_embeddings": False, "attention_bias": False,
}
# deepseek-ai/DeepSeek-V3 (the keys that matter here)
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "num_hidden_layers": 61,
    "num_attention_heads": 128, "num_key_value_heads": 128, "vocab_size": 129280, "kv_lora_rank": 512,
    "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "moe_intermediate_size": 2048,
    "first_k_dense_replace": 3, "moe_layer_freq": 1,
}


@pytest.mark.parametrize("cfg, published, where", [
    (MIXTRAL_8X7B, 46.7e9, "Mixtral-8x7B: 46.7B"),
    (QWEN15_MOE, 14.3e9, "Qwen1.5-MoE-A2.7B: 14.3B"),
    (QWEN3_30B_A3B, 30.5e9, "Qwen3-30B-A3B: 30.5B"),
])
def test_moe_parameter_counts_match_the_model_cards(cfg, published, where):
    model = model_from_dict(cfg, where)
    assert model.is_moe and model.dense_layers == 0
    assert model.total_params() == pytest.approx(published, rel=0.01), where


def test_dense_parameter_count_and_kv_bytes_are_exact():
    model = load_model("llama-3.1-8b")  # model card: 8,030,261,248 parameters
    assert model.total_params() == 8_030_261_248
    assert model.attention_kind == "gqa"
    # 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes
    assert model.kv_bytes_per_token("bf16") == 32 * 8 * 128 * 2 * 2
    # at TP 16 the 8 KV heads are replicated: one per device
    assert model.kv_bytes_per_token("bf16", tp=16) == 32 * 1 * 128 * 2 * 2


def test_qwen_moe_shared_expert_and_routed_experts_are_their_own_layers():
    model = model_from_dict(QWEN15_MOE, "qwen1.5-moe")
    names = {lin.name: lin for lin in linear_layers(model, 2, MOE)}
    assert names["experts_up"].n == 2 * 1408 // 2 and names["experts_up"].copies == 60
    assert names["shared_expert_up"].n == 2 * 5632 // 2 and names["shared_expert_down"].k == 5632 // 2
    assert names["shared_expert_gate"].n == 1
    assert names["router"].n == 60  # replicated, not split
    # the measuring harness times the same matrices the operators use
    shapes = {name for name, _, _ in layer_gemms(model, 2)}
    assert {"experts_up", "experts_down", "shared_expert_up", "shared_expert_down", "router"} <= shapes


def test_dense_first_layers_of_an_moe_model():
    cfg = dict(QWEN3_30B_A3B, mlp_only_layers=[0, 1])
    model = model_from_dict(cfg, "qwen3-moe with two dense layers")
    assert (model.dense_layers, model.moe_layers) == (2, 46)
    # the busiest of two stages holds 24 layers, all MoE
    assert stage_layer_kinds(model, 2) == (0, 24)
    ops = {op.name: op for op in dense_ops(model, 64, Sharding(), Precision())}
    assert ops["gate_up_proj"].count == 2 and ops["experts_up"].count == 46
    # the routed experts' grouped GEMM spreads the 64 x 8 routed rows over the experts reached
    shape = ops["experts_up"].shape
    assert shape.groups == round(128 * (1 - (1 - 8 / 128) ** 64)) and (shape.m - 1) * shape.groups < 64 * 8 <= shape.m * shape.groups
    dense_only = [lin.name for lin in linear_layers(model, 1, DENSE)]
    assert dense_only == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


@pytest.mark.parametrize("cfg, named", [
    ({**DEEPSEEK_V3, "model_type": "llama"}, "kv_lora_rank"),
    ({**MIXTRAL_8X7B, "model_type": "gemma3", "layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
    ({**MIXTRAL_8X7B, "model_type": "qwen3_next", "full_attention_interval": 4}, "full_attention_interval"),
    ({"model_type": "llava", "text_config": {"hidden_size": 4096}}, "text_config"),
])
def test_unmodelled_architectures_are_refused_naming_the_keys(cfg, named):
    with pytest.raises(InputError, match=named):
        model_from_dict(cfg, "config.json")


@pytest.mark.parametrize("cfg, message", [
    # a string where true/false belongs would have been read as true: a second embedding matrix
    ({**MIXTRAL_8X7B, "tie_word_embeddings": "false"}, "tie_word_embeddings: 'false' is not true or false"),
    ({**MIXTRAL_8X7B, "sliding_window": True}, "sliding_window: True is not a whole number >= 0"),
    ({**MIXTRAL_8X7B, "sliding_window": 4096.5}, "sliding_window: 4096.5 is not a whole number >= 0"),
    ({**QWEN15_MOE, "use_sliding_window": "yes"}, "use_sliding_window: 'yes' is not true or false"),
    ({**QWEN15_MOE, "max_window_layers": "abc"}, "max_window_layers: 'abc' is not a whole number >= 0"),
    ({**QWEN15_MOE, "mlp_only_layers": 3}, "mlp_only_layers: 3 is not a list of layer indices"),
    ({**DEEPSEEK_V3, "n_shared_experts": "1"}, "n_shared_experts: '1' is not a whole number >= 0"),
    ({**MIXTRAL_8X7B, "num_experts_per_tok": 9}, "num_experts_per_tok: 9 is more than the 8 experts a layer has"),
    ({**MIXTRAL_8X7B, "model_type": "opt", "word_embed_proj_dim": 512}, "word_embed_proj_dim"),
])
def test_config_values_of_the_wrong_kind_are_refused_not_misread(cfg, message):
    with pytest.raises(InputError) as info:
        model_from_dict(cfg, "config.json")
    assert str(info.value).startswith("config.json: ") and message in str(info.value), info.value


def test_unknown_model_type_is_refused_with_the_known_ones():
    with pytest.raises(InputError, match=r"model_type 'falcon' is not one the simulator reads \(known: llama"):
        model_from_dict({**MIXTRAL_8X7B, "model_type": "falcon"}, "config.json")


def _write(tmp_path, cfg):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_sliding_window_runs_only_where_full_attention_is_exact(tmp_path):
    from simulator.api import prepare

    with pytest.raises(InputError, match=r"sliding_window.*set max_model_len 4096"):
        prepare("h100-sxm", "mistral-7b", calibration="none")
    setup = prepare("h100-sxm", "mistral-7b", calibration="none", knobs={"max_model_len": 4096})
    assert setup.model.sliding_window == 4096
    assert setup.model.window_layers == 32  # every layer
    # Qwen configs state a window but switch it off; switched on, it covers the layers after the
    # first max_window_layers
    assert model_from_dict(QWEN15_MOE, "qwen").sliding_window == 0
    assert model_from_dict({k: v for k, v in QWEN15_MOE.items() if k != "use_sliding_window"}, "q").sliding_window == 0
    upper = model_from_dict(dict(QWEN15_MOE, use_sliding_window=True, max_window_layers=21), "qwen")
    assert (upper.sliding_window, upper.window_layers) == (32768, 3)
    assert model_from_dict(dict(QWEN15_MOE, use_sliding_window=True, max_window_layers=24), "q").sliding_window == 0
    every = model_from_dict(dict(QWEN15_MOE, use_sliding_window=True, max_window_layers=0), "q")
    assert (every.sliding_window, every.window_layers) == (32768, 24)
    with pytest.raises(InputError, match="last 3 layers attend to the last 32768 tokens"):
        prepare("h100-sxm", _write(tmp_path, dict(QWEN15_MOE, use_sliding_window=True, max_window_layers=21,
                                                  max_position_embeddings=65536)), calibration="none")


@pytest.mark.parametrize("quant, read", [
    (None, ("bf16", "")),
    ({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
     ("fp8", "fp8, 128 x 128 blocks")),
    ({"quant_method": "fp8", "activation_scheme": "static"}, ("fp8", "fp8")),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}, ("int4", "awq 4-bit")),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, ("int8", "gptq 8-bit")),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}, "targets": ["Linear"]}}},
     ("fp8", "compressed-tensors fp8")),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}, "targets": ["Linear"]}}},
     ("int4", "compressed-tensors int4")),
    # read as nothing it could be misread as: the run must name weight_dtype
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, (None, "quant_method 'bitsandbytes'")),
    ({"quant_method": "gptq", "bits": 3}, (None, "quant_method 'gptq'")),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"a": {"weights": {"num_bits": 8, "type": "float"}}, "b": {"weights": {"num_bits": 4, "type": "int"}}}},
     (None, "compressed-tensors weights [(4, 'int'), (8, 'float')]")),
])
def test_the_checkpoint_weight_type_is_read_from_its_quantization_config(quant, read):
    cfg = dict(MIXTRAL_8X7B, quantization_config=quant) if quant is not None else MIXTRAL_8X7B
    model = model_from_dict(cfg, "config.json")
    assert (model.checkpoint_weight_dtype, model.quantization) == read


def test_a_run_stores_the_checkpoints_weights_unless_told_otherwise(tmp_path):
    """vLLM loads an fp8 checkpoint as fp8 without a flag: DeepSeek-R1's 671 B weights at one
    byte each (plus bf16 embeddings and norms) are about 79 GiB of each of 8 H200s, not twice
    that; weight_dtype, when given, is a what-if that wins; a quantization the simulator does
    not read is refused until weight_dtype says what the weights are."""
    from simulator.api import prepare

    fp8 = prepare("h200", "deepseek-r1", tp=8, calibration="none")
    assert fp8.deployment.weight_dtype == "fp8"
    assert 75 * 2**30 < fp8.plan.weights_bytes < 85 * 2**30
    what_if = prepare("h200", "deepseek-r1", tp=8, calibration="none", knobs={"weight_dtype": "int4"})
    assert what_if.deployment.weight_dtype == "int4" and what_if.plan.weights_bytes < 0.6 * fp8.plan.weights_bytes
    bnb = _write(tmp_path, {**QWEN15_MOE, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    with pytest.raises(InputError, match=r"quantization_config \(quant_method 'bitsandbytes'\) is not one the "
                                         r"simulator reads .*; set weight_dtype"):
        prepare("h100-sxm", bnb, calibration="none")
    assert prepare("h100-sxm", bnb, calibration="none", knobs={"weight_dtype": "int4"}).deployment.weight_dtype == "int4"


@pytest.mark.parametrize("rope_scaling, context", [
    (None, 32768),
    # Llama 3.1's scaling already counts in max_position_embeddings
    ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}, 32768),
    # Qwen2.5's documented YaRN setting: 32,768 x 4
    ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 131072),
    ({"rope_type": "yarn", "factor": 40, "original_max_position_embeddings": 4096}, 163840),
    ({"type": "linear", "factor": 2.0}, 65536),
    ({"type": "dynamic", "factor": 2.0}, 65536),
])
def test_the_served_context_is_derived_from_rope_scaling_as_vllm_derives_it(rope_scaling, context):
    model = model_from_dict(dict(MIXTRAL_8X7B, rope_scaling=rope_scaling), "config.json")
    assert (model.max_position_embeddings, model.max_context) == (32768, context)


def test_a_max_model_len_beyond_the_models_context_is_refused():
    """vLLM refuses a max_model_len above the length it derives from the config; so does a run."""
    from simulator.api import prepare

    with pytest.raises(InputError, match=r"max_model_len 200000: more than the 131072 tokens of context "
                                         r"Llama-3.1-8B has .*; set max_model_len <= 131072"):
        prepare("h100-sxm", "llama-3.1-8b", calibration="none", knobs={"max_model_len": 200000})
    for scaling, message in (({"type": "linear", "factor": "x"}, "rope_scaling.factor: 'x' is not a positive number"),
                             ({"factor": 2.0}, r"rope_scaling: \{'factor': 2.0\} names no rope_type \(or type\)"),
                             ({"type": "linear", "factor": 1e300}, r"makes a context of 3.28e\+304 tokens")):
        with pytest.raises(InputError, match=message):
            model_from_dict(dict(MIXTRAL_8X7B, rope_scaling=scaling), "config.json")


def test_a_hugging_face_id_names_its_catalogue_model():
    """The id vLLM is given works as --model: a catalogue model's source, or a release its
    same_config lists (an Instruct model with the same architecture keys), in any case; a
    release keeps its own name; an id the catalogue lacks says it is not downloaded."""
    base = load_model("llama-3.1-8b")
    assert load_model("meta-llama/Llama-3.1-8B") == base
    assert load_model("META-LLAMA/llama-3.1-8b") == base
    instruct = load_model("meta-llama/Llama-3.1-8B-Instruct")
    assert instruct.name == "Llama-3.1-8B-Instruct" and instruct.total_params() == base.total_params()
    assert load_model("deepseek-ai/DeepSeek-R1-0528").checkpoint_weight_dtype == "fp8"
    with pytest.raises(InputError, match=r"--model org/Nope-7B: no such file or catalogue model \(a Hugging Face id "
                                         r"is not downloaded: give the checkpoint's config.json or folder\)"):
        load_model("org/Nope-7B")


def test_no_hugging_face_id_names_two_catalogue_models():
    import yaml

    from simulator.models.config import model_catalogue

    ids = [str(i).lower() for path in model_catalogue().values()
           for cfg in [yaml.safe_load(path.read_text())] for i in [cfg["source"], *cfg.get("same_config", [])]]
    assert len(ids) == len(set(ids))
