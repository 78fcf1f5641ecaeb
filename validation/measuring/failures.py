"""How the measuring harness reports what it could not do, short of stopping.

A shape one machine cannot run (too big for its memory, an fp8 GEMM on an older GPU, an
attention shape no fused kernel takes) raises Skip: the run goes on, and the message becomes a
note in the metadata, counted over the shapes it hit, so the message carries no shape details.
Any other error is shortened by first_line to one line for such notes and for the console.
Bad arguments are a different matter: UsageError, in `validation.measuring.cli`.
"""
from __future__ import annotations


class Skip(Exception):
    """This shape cannot be measured here; the message (without shape details) becomes a note."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
