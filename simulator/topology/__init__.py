"""Deployment topologies: how replicas are grouped into pools, and how the pools connect.

Colocated (every replica runs prefill and decode): one pool, `pools.build_pool("mixed", ...)`.
Disaggregated (`disaggregated.py`): a prefill pool and a decode pool, each with its own
hardware, parallelism and policy, joined by a KV-transfer link. A policy's `topology`
attribute says which one its name selects (`--scheduler disagg`: disaggregated). A new
topology is one new module that builds pools and connects their replicas.
"""
