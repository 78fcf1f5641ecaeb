"""The commands that show what ships with the simulator: `simulate specs` (list the hardware
catalogue, show one spec resolved in SI units, check spec files) and `simulate models` (list
the model catalogue with each model's shape)."""
from __future__ import annotations

import argparse
import json


def cmd_specs(args: argparse.Namespace) -> int:
    from ..hardware.loader import catalogue, load_spec, load_system

    if args.specs_command == "list":
        for name, path in catalogue().items():
            spec = load_spec(path)
            print(f"{name:22} {spec.kind:7} {spec.name:26} {path.parent.name}/{path.name}")
    elif args.specs_command == "show":
        spec = load_spec(args.name)
        print(json.dumps(spec.model_dump(), indent=2))
    else:
        for file in args.files:
            system = load_system(file)
            print(f"ok {file}: {system.name} ({system.total_devices} x {system.accelerator.name})")
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from ..models.config import load_model, model_catalogue

    for name in model_catalogue():
        m = load_model(name)
        moe = f"  MoE {m.num_experts} experts top-{m.experts_per_token} in {m.moe_layers} layers" if m.is_moe else ""
        window = f"  sliding window {m.sliding_window}" if m.sliding_window else ""
        print(f"{name:16} {m.total_params() / 1e9:6.2f} B params  {m.num_layers} layers  hidden {m.hidden_size}  "
              f"heads {m.num_heads}/{m.num_kv_heads} kv ({m.attention_kind}){moe}{window}")
    return 0
