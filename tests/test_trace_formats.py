"""Tests of the public-trace readers (formats.py) and the synthetic generator (generate.py).

The readers run against the shipped traces in workloads/traces/ and small files written to
a temporary directory; the generator's statistics are checked against bounds derived from
the distributions (5 standard errors: a false failure would be a ~1e-6 event, and the seeds
are fixed, so the tests are deterministic anyway).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import sys
import types
from collections import Counter
from itertools import islice

import numpy as np
import pytest

from simulator.errors import InputError
from simulator.paths import TRACES_DIR
from simulator.workloads.formats import detect_format, iter_azure, iter_mooncake, iter_records
from simulator.workloads.generate import generate, parse_length, write_jsonl

AZURE_CONV = TRACES_DIR / "azure-conv-2023.csv"
AZURE_CODE = TRACES_DIR / "azure-code-2023.csv"
MOONCAKE = TRACES_DIR / "mooncake-conversation-1k.jsonl"
EXAMPLE = TRACES_DIR / "example-chat.jsonl"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _data_rows(path) -> int:
    """Non-blank lines after the header, counted without the reader under test."""
    with open(path, encoding="utf-8") as stream:
        return sum(1 for line in stream if line.strip()) - 1


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- Azure ---------------------------------------------------------------------------------


def test_azure_conversation_trace_first_records_and_count():
    records = list(iter_azure(AZURE_CONV))
    assert records[0] == (2, {"arrival_s": 0.0, "input_tokens": 374, "output_tokens": 44})
    # 18:15:50.9951690 - 18:15:46.6805900, exactly, thanks to integer nanoseconds.
    assert records[1][1]["arrival_s"] == pytest.approx(4.314579, abs=1e-9)
    assert records[1][1]["input_tokens"] == 396 and records[1][1]["output_tokens"] == 109
    assert len(records) == _data_rows(AZURE_CONV) == 19366
    arrivals = [record["arrival_s"] for _, record in records]
    assert arrivals == sorted(arrivals)
    assert 3400 < arrivals[-1] < 3600  # the trace covers one hour
    assert records[-1][0] == 19367  # line numbers count the header


def test_azure_code_trace_count():
    records = list(iter_azure(AZURE_CODE))
    assert len(records) == _data_rows(AZURE_CODE) == 8819
    assert records[0][1] == {"arrival_s": 0.0, "input_tokens": 4808, "output_tokens": 10}


def test_azure_zero_token_rows_are_counted_not_silently_dropped(tmp_path):
    path = _write(
        tmp_path,
        "zero.csv",
        AZURE_HEADER
        + "2023-11-16 18:00:00.0000000,100,0\n"
        + "2023-11-16 18:00:01.5000000,200,20\n"
        + "2023-11-16 18:00:02.0000000,0,30\n"
        + "2023-11-16 18:00:03.0000000,300,40\n",
    )
    skipped = Counter()
    records = list(iter_azure(path, skipped))
    assert skipped == Counter({"GeneratedTokens is 0": 1, "ContextTokens is 0": 1})
    # The skipped first row still sets time zero, so the kept arrivals keep their times.
    assert records == [
        (3, {"arrival_s": 1.5, "input_tokens": 200, "output_tokens": 20}),
        (5, {"arrival_s": 3.0, "input_tokens": 300, "output_tokens": 40}),
    ]
    with pytest.raises(InputError, match=rf"^{path}:2: GeneratedTokens: 0 tokens"):
        list(iter_azure(path))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2023-11-16 18:00:01.0,abc,5", 'ContextTokens: "abc" is not an integer (expected a token count >= 1)'),
        ("2023-11-16 18:00:01.0,10,-5", "GeneratedTokens: -5 is negative"),
        ("2023-11-16 18:00:01.0,10,2.5", 'GeneratedTokens: "2.5" is not an integer'),
        ("yesterday,10,5", 'TIMESTAMP: "yesterday" is not a timestamp'),
        ("2023-11-16 18:00:01.x,10,5", 'TIMESTAMP: "2023-11-16 18:00:01.x" is not a timestamp'),
        ("2023-11-16 18:00:01.0,10", "row has 2 fields, the header 3"),
        ("2023-11-16 17:59:59.0,10,5", "TIMESTAMP: \"2023-11-16 17:59:59.0\" is before the first request's time"),
    ],
)
def test_azure_malformed_row_names_file_line_and_column(tmp_path, row, message):
    path = _write(tmp_path, "bad.csv", AZURE_HEADER + "2023-11-16 18:00:00.0000000,1,1\n" + row + "\n")
    with pytest.raises(InputError) as caught:
        list(iter_azure(path))
    text = str(caught.value)
    assert text.startswith(f"{path}:3: ") and message in text
    assert "\n" not in text


def test_azure_header_without_a_column_is_an_error(tmp_path):
    path = _write(tmp_path, "header.csv", "TIMESTAMP,ContextTokens,Tokens\n2023-11-16 18:00:00.0,1,1\n")
    with pytest.raises(InputError, match=rf"^{path}:1: header: no column GeneratedTokens"):
        list(iter_azure(path))


def test_azure_columns_found_by_name_and_crlf_accepted(tmp_path):
    path = tmp_path / "reordered.csv"
    path.write_bytes(
        b"GeneratedTokens,TIMESTAMP,ContextTokens\r\n7,2023-11-16 18:00:00.25,70\r\n\r\n8,2023-11-16 18:00:01,80"
    )
    assert list(iter_azure(path)) == [
        (2, {"arrival_s": 0.0, "input_tokens": 70, "output_tokens": 7}),
        (4, {"arrival_s": 0.75, "input_tokens": 80, "output_tokens": 8}),
    ]


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read the trace"):
        list(iter_azure(tmp_path / "absent.csv"))


# --- Mooncake ------------------------------------------------------------------------------


def test_mooncake_maps_hash_ids_to_prefix_hashes():
    records = list(iter_mooncake(MOONCAKE))
    assert len(records) == 1000
    line, first = records[0]
    assert line == 1
    assert first == {
        "arrival_s": 0.0,
        "input_tokens": 6758,
        "output_tokens": 500,
        "prefix_hashes": list(range(14)),
        "prefix_block_tokens": 512,
    }
    # Mooncake has one hash per started 512-token block of the prompt.
    for _, record in records:
        assert len(record["prefix_hashes"]) == math.ceil(record["input_tokens"] / 512)


def test_mooncake_timestamps_are_milliseconds_relative_to_the_first(tmp_path):
    lines = [
        {"timestamp": 1500, "input_length": 600, "output_length": 5, "hash_ids": [7, 8]},
        {"timestamp": 4500, "input_length": 100, "output_length": 0, "hash_ids": [9]},
        {"timestamp": 6000, "input_length": 10, "output_length": 3, "hash_ids": [7]},
    ]
    path = _write(tmp_path, "mc.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    skipped = Counter()
    records = list(iter_mooncake(path, skipped))
    assert [(line, r["arrival_s"], r["prefix_hashes"]) for line, r in records] == [(1, 0.0, [7, 8]), (3, 4.5, [7])]
    assert skipped == Counter({"output_length is 0": 1})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"timestamp": 0, "input_length": 5', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"timestamp": 0, "output_length": 5, "hash_ids": []}', "input_length: missing"),
        ('{"timestamp": 0, "input_length": "x", "output_length": 5, "hash_ids": []}', 'input_length: "x" is not an integer'),
        ('{"timestamp": 0, "input_length": true, "output_length": 5, "hash_ids": []}', 'input_length: "true" is not an integer'),
        ('{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [1, "a"]}', "hash_ids: expected a list of integers"),
        ('{"timestamp": "now", "input_length": 5, "output_length": 5, "hash_ids": []}', "timestamp:"),
    ],
)
def test_mooncake_malformed_line_names_file_line_and_field(tmp_path, line, message):
    good = '{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [1]}'
    path = _write(tmp_path, "bad.jsonl", good + "\n\n" + line + "\n")
    with pytest.raises(InputError) as caught:
        list(iter_mooncake(path))
    assert str(caught.value).startswith(f"{path}:3: ") and message in str(caught.value)


# --- BurstGPT ------------------------------------------------------------------------------

BURSTGPT_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def test_burstgpt_rows_become_requests_and_failed_ones_are_counted(tmp_path):
    """Seconds relative to the first row; a failed request (0 response tokens) is skipped and
    counted; the later release's extra columns (Session ID, Elapsed time) change nothing."""
    path = _write(tmp_path, "burst.csv", BURSTGPT_HEADER + "7,ChatGPT,472,18,490,Conversation log\n"
                  "9.5,GPT-4,1087,0,1087,API log\n" "12,ChatGPT,300,40,340,Conversation log\n")
    assert detect_format(path) == "burstgpt"
    skipped = Counter()
    assert list(iter_records(path, skipped=skipped)) == [
        (2, {"arrival_s": 0.0, "input_tokens": 472, "output_tokens": 18}),
        (4, {"arrival_s": 5.0, "input_tokens": 300, "output_tokens": 40})]
    assert skipped == Counter({"Response tokens is 0": 1})
    sessions = _write(tmp_path, "burst3.csv", "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,"
                      "Total tokens,Log Type\n" "3,a1,0.5,ChatGPT,10,2,12,Conversation log\n")
    assert list(iter_records(sessions)) == [(2, {"arrival_s": 0.0, "input_tokens": 10, "output_tokens": 2})]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x,ChatGPT,1,1,2,API log", ':3: Timestamp: "x" is not a number of seconds'),
        ("nan,ChatGPT,1,1,2,API log", ':3: Timestamp: "nan" is not a number of seconds'),
        ("1,ChatGPT,1,1,2,API log", ':3: Timestamp: "1" is before the first request'),
        ("6,ChatGPT,-3,1,2,API log", ":3: Request tokens: -3 is negative"),
    ],
)
def test_burstgpt_malformed_row_names_file_line_and_column(tmp_path, row, message):
    path = _write(tmp_path, "burst.csv", BURSTGPT_HEADER + "5,ChatGPT,1,1,2,API log\n" + row + "\n")
    with pytest.raises(InputError, match=message):
        list(iter_records(path, skipped=Counter()))


# --- detection and dispatch ----------------------------------------------------------------


def test_detect_format_of_shipped_traces():
    assert detect_format(AZURE_CONV) == "azure"
    assert detect_format(AZURE_CODE) == "azure"
    assert detect_format(MOONCAKE) == "mooncake"
    assert detect_format(EXAMPLE) == "jsonl"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("other.csv", "time,prompt,output\n1,2,3\n", "unknown CSV trace"),
        ("other.jsonl", '{"t": 1}\n', "unknown JSONL trace"),
        ("list.jsonl", "[1, 2]\n", "not a JSON object"),
        ("empty.jsonl", "\n\n", "the file is empty"),
    ],
)
def test_detect_format_rejects_unknown_files(tmp_path, name, text, message):
    with pytest.raises(InputError, match=message):
        detect_format(_write(tmp_path, name, text))


def test_detect_format_reads_content_not_only_the_extension(tmp_path):
    mooncake_txt = _write(tmp_path, "trace.txt", '{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}\n')
    azure_log = _write(tmp_path, "trace.log", "\n" + AZURE_HEADER + "2023-11-16 18:00:00.0,1,1\n")
    assert detect_format(mooncake_txt) == "mooncake"
    assert detect_format(azure_log) == "azure"
    assert next(iter_records(azure_log)) == (3, {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1})


def test_iter_records_dispatches_jsonl_to_the_contract_reader(tmp_path, monkeypatch):
    calls = []

    def fake_iter_jsonl(path, skipped=None):
        calls.append((path, skipped))
        yield 1, {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1}

    fake = types.ModuleType("simulator.workloads.trace")
    fake.iter_jsonl = fake_iter_jsonl
    monkeypatch.setitem(sys.modules, "simulator.workloads.trace", fake)
    path = _write(tmp_path, "ours.jsonl", '{"arrival_s": 0, "input_tokens": 1, "output_tokens": 1}\n')
    counter = Counter()
    assert list(iter_records(path, skipped=counter)) == [(1, {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1})]
    assert calls == [(path, counter)]


def test_iter_records_rejects_an_unknown_format():
    with pytest.raises(InputError, match='trace format "parquet" is unknown'):
        iter_records(AZURE_CONV, fmt="parquet")


def test_example_trace_is_the_documented_conversion():
    expected = [{"id": i, **record} for i, (_, record) in enumerate(islice(iter_azure(AZURE_CONV), 200))]
    with open(EXAMPLE, encoding="utf-8") as stream:
        shipped = [json.loads(line) for line in stream]
    assert shipped == expected


def test_example_trace_reads_with_the_contract_reader():
    trace = pytest.importorskip("simulator.workloads.trace")
    records = [record for _, record in trace.iter_jsonl(EXAMPLE)]
    assert len(records) == 200
    assert records[0]["input_tokens"] == 374 and records[0]["output_tokens"] == 44


# --- synthetic generator -------------------------------------------------------------------


def _gaps(records: list[dict]) -> np.ndarray:
    return np.diff([record["arrival_s"] for record in records])


def test_generate_is_deterministic_per_seed():
    def make(seed):
        return list(generate(2000, 3.0, "gamma", 2.0, "lognormal:800:1.2", "uniform:10:300", seed=seed))

    first = make(7)
    assert first == make(7)
    assert first != make(8)
    assert [record["id"] for record in first] == list(range(2000))
    assert first[0]["arrival_s"] == 0.0


def test_poisson_gaps_have_mean_one_over_rate_and_cv_one():
    rate, n = 4.0, 200_001
    gaps = _gaps(list(generate(n, rate, seed=1)))
    m = gaps.size
    # Exponential gaps: sd = mean = 1/rate, so the sample mean has standard error (1/rate)/sqrt(m).
    assert abs(gaps.mean() - 1 / rate) < 5 * (1 / rate) / math.sqrt(m)
    # Sample sd of an exponential (kurtosis 9): relative standard error sqrt((9 - 1) / m) / 2.
    cv = gaps.std(ddof=1) / gaps.mean()
    assert abs(cv - 1) < 5 * (math.sqrt(8 / m) / 2 + 1 / math.sqrt(m))


def test_gamma_gaps_have_the_asked_cv_and_mean():
    rate, cv, n = 2.0, 3.0, 400_001
    gaps = _gaps(list(generate(n, rate, "gamma", cv, seed=2)))
    m = gaps.size
    shape = 1 / cv**2
    # Relative standard errors of the sample mean (cv / sqrt(m)) and, by the delta method, of
    # the sample sd (sqrt((kurtosis - 1) / m) / 2, gamma kurtosis 3 + 6/shape); the CV's
    # relative error is at most their sum.
    rel_mean = cv / math.sqrt(m)
    rel_sd = math.sqrt((2 + 6 / shape) / m) / 2
    assert abs(gaps.mean() * rate - 1) < 5 * rel_mean
    assert abs(gaps.std(ddof=1) / gaps.mean() / cv - 1) < 5 * (rel_mean + rel_sd)


def test_lognormal_lengths_have_the_asked_mean():
    mean, sigma, n = 1000.0, 1.0, 200_000
    records = list(generate(n, 1.0, input=f"lognormal:{mean}:{sigma}", output="fixed:1", seed=3))
    lengths = np.array([record["input_tokens"] for record in records])
    # Log-normal sd is mean * sqrt(exp(sigma^2) - 1); rounding to whole tokens moves the
    # mean by at most 0.5 (the clamp to >= 1 is negligible at this mean).
    standard_error = mean * math.sqrt(math.exp(sigma**2) - 1) / math.sqrt(n)
    assert abs(lengths.mean() - mean) < 5 * standard_error + 0.5
    assert lengths.min() >= 1
    assert {record["output_tokens"] for record in records} == {1}


def test_uniform_lengths_cover_both_ends_inclusive():
    records = list(generate(5000, 1.0, input="uniform:3:6", output="fixed:9", seed=4))
    assert {record["input_tokens"] for record in records} == {3, 4, 5, 6}
    assert {record["output_tokens"] for record in records} == {9}


def test_empirical_lengths_come_from_the_trace_columns():
    records = list(generate(3000, 1.0, input=f"empirical:{AZURE_CODE}", output=f"empirical:{AZURE_CODE}", seed=5))
    trace = [record for _, record in iter_azure(AZURE_CODE)]
    inputs = {record["input_tokens"] for record in trace}
    outputs = {record["output_tokens"] for record in trace}
    assert {record["input_tokens"] for record in records} <= inputs
    assert {record["output_tokens"] for record in records} <= outputs
    # Input and output columns differ a lot (means ~2,000 vs ~30 tokens), so a mix-up shows.
    assert np.mean([r["input_tokens"] for r in records]) > 10 * np.mean([r["output_tokens"] for r in records])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fixed", "needs one value, fixed:N"),
        ("fixed:0", "token counts must be >= 1"),
        ("fixed:ten", "has N 'ten', not an integer"),
        ("uniform:5", "needs two values, uniform:LO:HI"),
        ("uniform:9:3", "has LO 9 > HI 3"),
        ("lognormal:500", "needs two values, lognormal:MEAN:SIGMA"),
        ("lognormal:500:0", "SIGMA 0; it must be > 0"),
        ("lognormal:0.5:1", "the mean length must be >= 1 token"),
        ("lognormal:nan:1", "not a finite number"),
        ("normal:5:1", "unknown kind 'normal'"),
        ("empirical:", "names no trace file"),
    ],
)
def test_length_spec_errors_are_clear(spec, message):
    with pytest.raises(InputError) as caught:
        parse_length(spec, "input_tokens")
    text = str(caught.value)
    assert text.startswith(f'input_tokens: "{spec}" ') and message in text
    assert "expected fixed:N, uniform:LO:HI, lognormal:MEAN:SIGMA or empirical:PATH" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1, "rate": 1.0}, "n: -1 is not a request count"),
        ({"n": 10, "rate": 0.0}, "rate: 0.0 is not a rate"),
        ({"n": 10, "rate": 1.0, "arrival": "bursty"}, 'arrival: "bursty" is unknown'),
        ({"n": 10, "rate": 1.0, "cv": 2.0}, "cv: 2.0 needs arrival gamma"),
        ({"n": 10, "rate": 1.0, "arrival": "gamma", "cv": 0.0}, "cv: 0.0 is not a coefficient"),
        ({"n": 10, "rate": 1.0, "seed": -3}, "seed: -3 is not a seed"),
    ],
)
def test_generate_checks_its_arguments_at_once(kwargs, message):
    with pytest.raises(InputError, match=message):
        generate(**kwargs)  # no iteration: the check must not wait for the first record


def test_generate_streams():
    stream = generate(1_000_000, 100.0, input="uniform:1:100", output="fixed:8")
    assert inspect.isgenerator(stream)
    head = list(islice(stream, 10))
    assert [record["id"] for record in head] == list(range(10))
    arrivals = [record["arrival_s"] for record in head]
    assert arrivals == sorted(arrivals)
    stream.close()


def test_write_jsonl_round_trip(tmp_path):
    records = list(generate(1000, 50.0, "gamma", 0.5, "uniform:1:4000", "lognormal:200:0.8", seed=9))
    path = tmp_path / "sub" / "trace.jsonl"
    assert write_jsonl(iter(records), path) == 1000
    lines = path.read_text(encoding="utf-8").splitlines()
    assert ", " not in lines[0] and ": " not in lines[0]  # compact separators
    back = [json.loads(line) for line in lines]
    assert [{**r, "arrival_s": round(r["arrival_s"], 6)} for r in records] == back
    assert os.listdir(path.parent) == ["trace.jsonl"]  # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_jsonl_failure_keeps_the_old_file(tmp_path):
    path = _write(tmp_path, "trace.jsonl", "old\n")

    def broken():
        yield {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1}
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_jsonl(broken(), path)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(tmp_path) == ["trace.jsonl"]
