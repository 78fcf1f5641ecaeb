"""Host memory for swapped-out KV blocks (vLLM v0's `swap_space`) and the link copies take."""
from __future__ import annotations


class SwapSpace:
    """Host memory for swapped-out KV blocks of one replica, and the host link that copies them.

    Capacity is `swap_space` GiB per device (vLLM's knob), no more than the host memory's
    share per device. Copies block the step that makes them (vLLM v0 issues them on the
    compute stream before the step's kernels): each direction with bytes costs the link's
    latency plus bytes / bandwidth, added to that step's duration.
    """

    def __init__(self, capacity_blocks: int, bytes_per_block: float, bandwidth: float, latency_s: float):
        self.capacity_blocks, self.bytes_per_block = capacity_blocks, bytes_per_block
        self.bandwidth, self.latency_s = bandwidth, latency_s
        self.used_blocks = 0
        self.out_count = self.in_count = 0
        self.out_bytes = self.in_bytes = 0.0
        self.time_s = 0.0
        self.full = 0  # preemptions that found no swap space and recomputed instead
        self._pending = [0.0, 0.0]  # bytes out, bytes in, not yet charged to a step

    def swap_out(self, blocks: int) -> bool:
        if self.used_blocks + blocks > self.capacity_blocks:
            self.full += 1
            return False
        self.used_blocks += blocks
        self.out_count += 1
        self.out_bytes += blocks * self.bytes_per_block
        self._pending[0] += blocks * self.bytes_per_block
        return True

    def swap_in(self, blocks: int) -> None:
        self.used_blocks -= blocks
        self.in_count += 1
        self.in_bytes += blocks * self.bytes_per_block
        self._pending[1] += blocks * self.bytes_per_block

    def take_transfer_s(self) -> float:
        """Copy time the next step carries: the copies made since the last step."""
        seconds = sum(self.latency_s + b / self.bandwidth for b in self._pending if b)
        self._pending = [0.0, 0.0]
        self.time_s += seconds
        return seconds
