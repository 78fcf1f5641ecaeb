"""A `simulate run` output folder, read into one object (`load_run` → `RunOutput`).

A run folder holds summary.json, requests.csv and iterations.csv (docs/contracts.md, section
5). `simulate compare` and `simulate show` read them here, so what counts as a run folder and
how its files are parsed is decided in one place. Anything else the user names (a missing
path, a folder without a summary, a summary that is not a run's) is an input error with one
line that says what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:  # pandas is imported only when a file is read (start-up time)
    import pandas as pd

SUMMARY_SCHEMA = "simulator.summary/"  # what every version of summary.json's `schema` starts with
PLOTS = "plots.png"  # what `simulate show` draws into the run folder


@dataclass
class RunOutput:
    """One run folder: its summary, and its per-request and per-iteration tables once read."""

    path: Path
    summary: dict[str, Any]
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    def _read(self, name: str, text: tuple[str, ...]) -> pd.DataFrame:
        if name not in self._frames:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            path = self.path / name
            if not path.is_file():
                raise InputError(f"{self.path}: no {name} in this run folder (`simulate run --out` writes "
                                 "summary.json, requests.csv and iterations.csv)")
            # text columns verbatim (an id "NA" stays "NA"); "nan" in the others is NaN
            options = pacsv.ConvertOptions(column_types={column: pa.string() for column in text},
                                           strings_can_be_null=False)
            try:
                self._frames[name] = pacsv.read_csv(path, convert_options=options).to_pandas()
            except (OSError, pa.ArrowInvalid) as error:
                raise InputError(f"{path}: not a readable CSV ({error})") from None
        return self._frames[name]

    @property
    def requests(self) -> pd.DataFrame:
        """requests.csv, ids and status/reason as text, times as floats (NaN for a rejected request)."""
        return self._read("requests.csv", ("id", "status", "reason"))

    @property
    def iterations(self) -> pd.DataFrame:
        """iterations.csv, stage and role as text."""
        return self._read("iterations.csv", ("stage", "role"))

    def get(self, *keys: str) -> Any:
        """summary[k1][k2]..., None where any key is missing."""
        value: Any = self.summary
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value


def load_run(path: str | Path) -> RunOutput:
    """The run folder at `path` (or the folder of a summary.json named directly)."""
    folder = Path(path)
    if folder.is_file() and folder.name == "summary.json":
        folder = folder.parent
    expected = "expected the --out folder of `simulate run`, holding summary.json"
    if not folder.exists():
        raise InputError(f"{path}: no such folder ({expected})")
    summary_path = folder / "summary.json"
    if not folder.is_dir() or not summary_path.is_file():
        raise InputError(f"{path}: not a run folder ({expected})")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{summary_path}: not a readable summary ({error})") from None
    if not isinstance(summary, dict) or not str(summary.get("schema", "")).startswith(SUMMARY_SCHEMA):
        raise InputError(f"{summary_path}: not a run summary (no `schema: {SUMMARY_SCHEMA}...`; {expected})")
    return RunOutput(folder, summary)
