"""A `vllm serve` command line read as deployment knobs, so that a serving engineer can paste the
command they run (`simulate run HW TRACE --vllm "vllm serve MODEL -tp 2 --max-num-seqs 128"`).

Each knob that mirrors a vLLM flag (`knob(..., "vLLM --max-num-seqs")` in deployment.py) is set
by that flag, as vLLM reads it: `--flag VALUE` or `--flag=VALUE`, a switch alone for true and
`--no-flag` for false, vLLM's short forms (`-tp`, `-pp`, `-dp`). `--dtype`, `--quantization` and
`--kv-cache-dtype` take vLLM's names for types (half, bfloat16, fp8_e4m3...); environment
assignments before the command set the knobs that mirror a variable (VLLM_CPU_KVCACHE_SPACE=40),
and any other variable is listed back as not simulated. Flags that change
nothing the simulator models (the server's address, logging, the tokenizer) are listed back as
not simulated, never silently dropped; any other flag is an input error, since the run could not
be the command's.
"""
from __future__ import annotations

import re
import shlex
from typing import Any, get_args

import yaml

from .deployment import Deployment, knob_list
from .errors import InputError

SHORT = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size",
         "-q": "--quantization"}
# knob by the one vLLM flag it mirrors
FLAG_KNOBS = {str(row["mirrors"]).removeprefix("vLLM "): str(row["knob"]) for row in knob_list()
              if re.fullmatch(r"vLLM --[a-z0-9-]+", str(row["mirrors"]))}
# knob by the environment variable it mirrors ("vLLM VLLM_CPU_KVCACHE_SPACE (environment)")
ENV_KNOBS = {str(row["mirrors"]).split()[1]: str(row["knob"]) for row in knob_list()
             if str(row["mirrors"]).endswith("(environment)")}
# vLLM's --dtype names: auto keeps the checkpoint's (bf16 here)
DTYPES = {"auto": None, "half": "fp16", "float16": "fp16", "bfloat16": "bf16"}
KV_DTYPES = {"auto": None, "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "bfloat16": "bf16", "half": "fp16",
             "float16": "fp16"}
# flags with a value, and switches, that change nothing a run models
NOT_SIMULATED = ("--host", "--port", "--served-model-name", "--api-key", "--uvicorn-log-level", "--tokenizer",
                 "--tokenizer-mode", "--revision", "--tokenizer-revision", "--code-revision", "--download-dir",
                 "--load-format", "--seed", "--chat-template", "--tool-call-parser", "--reasoning-parser",
                 "--generation-config", "--root-path", "--allowed-origins", "--ssl-keyfile", "--ssl-certfile",
                 "--max-log-len", "--config-format", "--distributed-executor-backend", "--compilation-config",
                 "-O")
NOT_SIMULATED_SWITCHES = ("--trust-remote-code", "--disable-log-requests", "--disable-log-stats",
                          "--enable-log-requests", "--enable-auto-tool-choice", "--disable-fastapi-docs",
                          "--disable-frontend-multiprocessing", "--skip-tokenizer-init", "--enable-prompt-tokens-details")


def knobs_from_vllm(command: str) -> tuple[dict[str, Any], list[str]]:
    """The knobs a `vllm serve` command line sets, and its flags that a run does not model."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"--vllm: cannot split the command line ({exc})") from None
    knobs: dict[str, Any] = {}
    ignored: list[str] = []
    # environment assignments before the command (VLLM_CPU_KVCACHE_SPACE=40 vllm serve ...)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        if name in ENV_KNOBS:
            knobs[ENV_KNOBS[name]] = yaml.safe_load(value)
        else:
            ignored.append(name)
    if words[:1] == ["vllm"]:
        words = words[1:]
    if words[:1] == ["serve"]:
        words = words[1:]
    if words and not words[0].startswith("-"):
        knobs["model"] = words.pop(0)
    at = 0
    while at < len(words):
        word = words[at]
        if not word.startswith("-"):
            raise InputError(f"--vllm: {word}: not a flag (vllm serve takes one positional argument, the model, first)")
        flag, has_value, value = word.partition("=")
        flag = SHORT.get(flag, flag)
        if not _known(flag):
            raise InputError(f"--vllm: {flag} is not a vLLM flag the simulator reads or knows to leave out (it "
                             f"reads {', '.join(sorted({*FLAG_KNOBS, '--quantization'}))})")
        takes_value = _takes_value(flag)
        if takes_value and not has_value:
            if at + 1 >= len(words) or (words[at + 1].startswith("--")):
                raise InputError(f"--vllm: {word} needs a value")
            value, at = words[at + 1], at + 1
        at += 1
        if flag in NOT_SIMULATED or flag in NOT_SIMULATED_SWITCHES:
            ignored.append(flag)
        elif flag == "--model":
            knobs["model"] = value
        elif flag == "--dtype":
            _set_type(knobs, "activation_dtype", DTYPES, flag, value)
        elif flag == "--kv-cache-dtype":
            _set_type(knobs, "kv_cache_dtype", KV_DTYPES, flag, value)
        elif flag == "--quantization":
            if value != "fp8":
                raise InputError(f"--vllm: --quantization {value}: a checkpoint's own quantization is read from its "
                                 "config.json; --quantization fp8 (weights quantized at load) is the one read here")
            knobs["weight_dtype"] = "fp8"
        elif flag in FLAG_KNOBS:  # a switch may still be written --flag=false
            knobs[FLAG_KNOBS[flag]] = _value(FLAG_KNOBS[flag], value) if takes_value or has_value else True
        else:  # --no-FLAG
            knobs[FLAG_KNOBS["--" + flag[5:]]] = False
    return knobs, ignored


def _known(flag: str) -> bool:
    return (flag in FLAG_KNOBS or flag in NOT_SIMULATED or flag in NOT_SIMULATED_SWITCHES
            or flag in ("--model", "--dtype", "--kv-cache-dtype", "--quantization")
            or (flag.startswith("--no-") and "--" + flag[5:] in FLAG_KNOBS))


def _takes_value(flag: str) -> bool:
    """Whether a flag is followed by a value (a switch is not: vLLM's boolean knobs and the
    not-simulated switches)."""
    if flag in NOT_SIMULATED_SWITCHES or flag.startswith("--no-"):
        return False
    knob = FLAG_KNOBS.get(flag)
    return knob is None or bool not in (annotation := Deployment.model_fields[knob].annotation,
                                        *get_args(annotation))


def _value(knob: str, text: str) -> Any:
    """A flag's value as the knob takes it: a YAML scalar, or for max_model_len vLLM's
    human-readable counts (25.6k = 25,600; K is 1,024)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM])", text.strip()) if knob == "max_model_len" else None
    if match:
        scale = {"k": 1e3, "K": 2**10, "m": 1e6, "M": 2**20}[match.group(2)]
        return int(float(match.group(1)) * scale)
    return yaml.safe_load(text)


def _set_type(knobs: dict[str, Any], knob: str, names: dict[str, str | None], flag: str, value: str) -> None:
    if value not in names:
        raise InputError(f"--vllm: {flag} {value}: not a type the simulator models ({', '.join(names)})")
    if names[value] is not None:
        knobs[knob] = names[value]
