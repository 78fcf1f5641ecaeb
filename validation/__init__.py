"""Measuring harness for real GPUs/CPUs and validation data (see validation/README.md)."""
