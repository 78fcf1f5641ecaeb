"""`simulate --version` names the installed version and exits 0."""
from __future__ import annotations

import subprocess
import sys

from simulator import __version__


def test_version():
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"simulate {__version__}"
