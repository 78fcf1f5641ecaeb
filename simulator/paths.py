"""Where the shipped catalogues live (hardware specs, models, traces).

The project is installed editable from its repository, so the catalogues are the folders
beside the `simulator` package.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARDWARE_DIR = ROOT / "hardware_specs"
MODELS_DIR = ROOT / "workloads" / "models"
TRACES_DIR = ROOT / "workloads" / "traces"


def shown_path(path: str | Path) -> str:
    """A file as outputs name it: resolved, and relative to the project when it is a shipped
    one (under hardware_specs/), so outputs neither carry the installing machine's paths nor
    differ between checkouts; any other file by its absolute path."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(HARDWARE_DIR) else str(resolved)
