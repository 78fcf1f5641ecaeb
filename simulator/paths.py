"""Where the shipped catalogues live (hardware specs, models, traces).

They ship inside the package, under `simulator/catalogue/`: `hardware_specs/`,
`workloads/models/` and `workloads/traces/`. In a checkout these are symlinks to the folders of
the same names at the repository root (pyproject.toml says why); in an installed wheel they
are the copied folders. Either way the package reads them at the same place, and every path
below is resolved, so in a checkout it names the repository's own files.
"""
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parent / "catalogue"
HARDWARE_DIR = (CATALOGUE / "hardware_specs").resolve()
MODELS_DIR = (CATALOGUE / "workloads" / "models").resolve()
TRACES_DIR = (CATALOGUE / "workloads" / "traces").resolve()
# The folder that holds hardware_specs/ and workloads/: the repository in a checkout,
# simulator/catalogue/ in an installed copy. Shipped files are named relative to it.
ROOT = HARDWARE_DIR.parent


def shipped(folder: Path) -> Path:
    """A catalogue folder, which must exist: without it the package was installed without its
    data, which is a broken installation (an internal error), not an empty catalogue."""
    if not folder.is_dir():
        raise RuntimeError(f"the shipped catalogue {folder} is missing: this installation of the simulator "
                           "lacks its package data (reinstall it from a wheel or a checkout)")
    return folder


def shown_path(path: str | Path) -> str:
    """A file as outputs name it: resolved, and relative to the project when it is a shipped
    one (hardware_specs/..., workloads/...), so outputs neither carry the installing machine's
    paths nor differ between checkouts and installed copies; any other file by its absolute path."""
    resolved = Path(path).resolve()
    if any(resolved.is_relative_to(folder) for folder in (HARDWARE_DIR, MODELS_DIR, TRACES_DIR)):
        return str(resolved.relative_to(ROOT))
    return str(resolved)


def file_stamp(path: Path) -> tuple[int, int]:
    """A file's modification time (ns) and size: with its path, the key a parsed file is cached
    under, so that a file edited between two runs of one process (a notebook) is read again.
    Raises OSError where the file cannot be stat'ed."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
