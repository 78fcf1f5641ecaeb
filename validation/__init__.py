"""Measuring harness for real GPUs/CPUs and validation data (see validation/README.md)."""
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def require_data() -> None:
    """The tools that re-derive shipped numbers (profiles, default efficiencies, accuracy) read
    the measurements in validation/data/, which the repository holds and the installed package
    does not (the measuring harness, `validation.measure`, needs none): without them such a tool
    stops with this one line instead of a traceback."""
    if not DATA.is_dir():
        raise SystemExit("error: validation/data/ (the measurements this tool reads) is in the repository, not "
                         "in the installed package: run it from a checkout of the repository")
