"""`--vllm`: a `vllm serve` command line read as the knobs that mirror its flags."""
from __future__ import annotations

import json

import pytest

from simulator.cli import main
from simulator.errors import InputError
from simulator.vllm_args import knobs_from_vllm

TRACE = "\n".join(json.dumps({"arrival_s": 0.1 * i, "input_tokens": 300 + 40 * i, "output_tokens": 20})
                  for i in range(12)) + "\n"


def test_a_vllm_command_line_sets_the_knobs_its_flags_mirror():
    knobs, ignored = knobs_from_vllm(
        "vllm serve meta-llama/Llama-3.1-8B-Instruct -tp 2 --max-num-seqs 128 --gpu-memory-utilization=0.95 "
        "--enable-prefix-caching --no-enable-chunked-prefill --max-model-len 25.6k --dtype half "
        "--kv-cache-dtype fp8_e4m3 --quantization fp8 --port 8000 --trust-remote-code")
    assert knobs == {"model": "meta-llama/Llama-3.1-8B-Instruct", "tp": 2, "max_num_seqs": 128,
                     "gpu_memory_utilization": 0.95, "enable_prefix_caching": True, "enable_chunked_prefill": False,
                     "max_model_len": 25600, "activation_dtype": "fp16", "kv_cache_dtype": "fp8",
                     "weight_dtype": "fp8"}
    assert ignored == ["--port", "--trust-remote-code"]
    assert knobs_from_vllm("--model m --max-model-len 32K --dtype auto")[0] == {"model": "m", "max_model_len": 32768}
    assert knobs_from_vllm("m --enable-prefix-caching=false")[0] == {"model": "m", "enable_prefix_caching": False}
    # the CPU backend's KV space is an environment variable; other variables change nothing modelled
    assert knobs_from_vllm("VLLM_CPU_KVCACHE_SPACE=40 VLLM_LOGGING_LEVEL=DEBUG vllm serve m") == (
        {"cpu_kvcache_space": 40, "model": "m"}, ["VLLM_LOGGING_LEVEL"])


@pytest.mark.parametrize("command, message", [
    ("vllm serve m --speculative-config '{}'", "--speculative-config is not a vLLM flag the simulator reads"),
    # an unknown switch is named as such, not taken for a flag short of its value
    ("vllm serve m --enable-lora --max-num-seqs 8", "--enable-lora is not a vLLM flag the simulator reads"),
    ("vllm serve m --quantization awq", "--quantization awq: a checkpoint's own quantization is read from its config"),
    ("vllm serve m --dtype float32", "--dtype float32: not a type the simulator models"),
    ("vllm serve m --max-num-seqs", "--max-num-seqs needs a value"),
    ("vllm serve m n", "n: not a flag"),
    ("vllm serve 'm", "cannot split the command line"),
])
def test_a_flag_the_simulator_cannot_honour_is_an_error(command, message):
    with pytest.raises(InputError, match=message):
        knobs_from_vllm(command)


def test_simulate_run_with_vllm_is_the_run_with_the_same_knobs(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text(TRACE)
    by_flags = ["run", "h100-sxm", str(trace), "--vllm", "vllm serve llama-3.2-1b --max-num-seqs 4 --port 9000",
                "--out", str(tmp_path / "a"), "--quiet"]
    assert main(by_flags) == 0
    assert "--vllm: not simulated (no effect on the timing): --port" in capsys.readouterr().err
    assert main(["run", "h100-sxm", str(trace), "--model", "llama-3.2-1b", "--set", "max_num_seqs=4",
                 "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab")
    for summary in (a, b):
        del summary["sim"]["wall_s"]
    assert a == b and a["batch_limits"]["sequences"] == 4
    assert main(["run", "h100-sxm", str(trace), "--vllm", "vllm serve llama-3.2-1b --max-num-seqs 4",
                 "--set", "max_num_seqs=8", "--out", str(tmp_path / "c")]) == 2
    assert "--vllm: sets max_num_seqs, and so does --set max_num_seqs; give it once" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_plan_candidate_takes_a_vllm_command_line(tmp_path):
    """`vllm:` fills the candidate's model, tp and dtypes and its knobs, as --vllm does a run's."""
    from simulator.planning.plan_file import load_plan

    def plan(candidate: str):
        path = tmp_path / "plan.yaml"
        path.write_text("workload: {generate: {requests: 10, rate: 1, input: 'fixed:10', output: 'fixed:2'}}\n"
                        "model: llama-3.1-8b\nslo: {ttft_p90: 1}\ntarget_rate: 1\ncandidates:\n  - " + candidate + "\n")
        return load_plan(path)

    (_, spec), = plan('{name: a, hardware: h100-sxm, vllm: "vllm serve qwen3-8b -tp 2 --max-num-seqs 64 '
                      '--kv-cache-dtype fp8 --host 0.0.0.0"}').candidates
    assert (spec.model, spec.tp, spec.kv_cache_dtype, spec.knobs) == ("qwen3-8b", 2, "fp8", {"max_num_seqs": 64})
    assert spec.not_simulated() == ["--host"]
    with pytest.raises(InputError, match=r"candidates\[0\]: vllm sets max_num_seqs, and so does knobs.max_num_seqs"):
        plan('{name: a, hardware: h100-sxm, vllm: "vllm serve m --max-num-seqs 8", knobs: {max_num_seqs: 4}}')
