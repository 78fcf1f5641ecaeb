"""Where the shipped catalogues live (hardware specs, models, traces).

The project is installed editable from its repository, so the catalogues are the folders
beside the `simulator` package.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARDWARE_DIR = ROOT / "hardware_specs"
MODELS_DIR = ROOT / "workloads" / "models"
TRACES_DIR = ROOT / "workloads" / "traces"
