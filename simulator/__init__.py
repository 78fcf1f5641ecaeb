"""simulator: a discrete-event simulator and performance model of LLM inference hardware."""
from __future__ import annotations

__version__ = "0.1.0"


def simulate(*args, **kwargs):
    """Run one simulation; see `simulator.api.simulate` (imported lazily to keep start-up quick)."""
    from .api import simulate as run

    return run(*args, **kwargs)


__all__ = ["simulate"]
