"""The serving front-end a request passes through before the engine sees it, and after.

vLLM's OpenAI-compatible API server (0.19) parses the HTTP request and renders the chat
template, tokenises the prompt in micro-batches (`AsyncMicrobatchTokenizer`: up to 32 prompts,
gathered for at most 2 ms from the first one), and hands the request to the engine core process
over ZeroMQ; the engine adds it to its waiting queue at its next step boundary (the replica's
own business). Tokens come back the same way: to the API server, detokenised incrementally and
streamed to the client. A trace's arrival time is the client's, so TTFT and E2E include both
legs, as a client measures them.

The costs are small (a few milliseconds) but they are what low-load TTFT is made of:
- `HTTP_S`: request parsing, validation and the chat template (estimate: a few hundred
  microseconds of Python per request in FastAPI/uvicorn);
- `TOKENIZER_WINDOW_S`, `TOKENIZER_BATCH`: the micro-batch a prompt waits in (vLLM's
  `batch_wait_timeout_s` = 0.002 and `max_batch_size` = 32);
- `TOKENIZE_S_PER_TOKEN`: the Rust tokenizer's time per prompt token (estimate: about a
  million tokens a second on one core);
- `IPC_S`: one hop between the API server and the engine core (msgpack + ZeroMQ; estimate);
- `OUTPUT_S`: a token's way back, detokenised and sent (one IPC hop plus incremental
  detokenisation and the server-sent event; estimate).
Traces whose arrival times are already the engine's (vLLM's own `queued_ts`, as in the
shipped replays) set `api_server=false`.
"""
from __future__ import annotations

HTTP_S = 0.3e-3
TOKENIZER_WINDOW_S = 2e-3
TOKENIZER_BATCH = 32
TOKENIZE_S_PER_TOKEN = 1e-6
IPC_S = 0.2e-3
OUTPUT_S = IPC_S + 0.1e-3


class ApiServer:
    """When each request reaches the engine: arrivals are fed in arrival order."""

    def __init__(self) -> None:
        self._window_end = -1.0  # when the open tokenizer micro-batch is dispatched
        self._in_window = 0

    def engine_arrival_s(self, arrival_s: float, prompt_tokens: int) -> float:
        ready = arrival_s + HTTP_S
        if ready > self._window_end or self._in_window >= TOKENIZER_BATCH:
            self._window_end, self._in_window = ready + TOKENIZER_WINDOW_S, 0
        self._in_window += 1
        return self._window_end + prompt_tokens * TOKENIZE_S_PER_TOKEN + IPC_S
