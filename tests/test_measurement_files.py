"""Bad measurement files get exit 2 and one line naming the file, the row and the column."""
from __future__ import annotations

import pandas as pd
import pytest

from simulator.cli import main

GOOD = "op,dtype,m,n,k,time_us,device,source\ngemm,bf16,128,4096,4096,20.5,GPU-A,test\n"


def run_cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


CASES = {
    "unknown op": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1,2,3,4.0,GPU-A\nconv2d,bf16,1,2,3,4.0,GPU-A\n",
                   [":3", "op", "conv2d"]),
    "missing parameter column": ("op,dtype,m,n,time_us,device\ngemm,bf16,1,2,4.0,GPU-A\n", [":2", "k", "column missing"]),
    "negative time": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1,2,3,4.0,GPU-A\ngemm,bf16,1,2,3,-1,GPU-A\n",
                      [":3", "time_us", "-1"]),
    "time not a number": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1,2,3,fast,GPU-A\n", [":2", "time_us"]),
    "zero-sized shape": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,0,2,3,4.0,GPU-A\n", [":2", "m"]),
    "mixed devices": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1,2,3,4.0,GPU-A\ngemm,bf16,1,2,3,4.0,GPU-B\n",
                      ["2 devices", "--device"]),
    "missing time column": ("op,dtype,m,n,k,device\ngemm,bf16,1,2,3,GPU-A\n", ["time_us", "missing"]),
    "unknown dtype": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1,2,3,4.0,GPU-A\ngemm,bfloat16,1,2,3,4.0,GPU-A\n",
                      [":3", "dtype", "bfloat16", "bf16"]),
    "infinite shape": ("op,dtype,m,n,k,time_us,device\ngemm,bf16,1e400,2,3,4.0,GPU-A\n", [":2", "m", "finite"]),
    "bad memcpy direction": ("op,dtype,bytes,direction,time_us,device\nmemcpy,bf16,1024,sideways,3.0,GPU-A\n",
                             [":2", "direction", "h2d"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "calibrate"])
def test_bad_measurement_file(tmp_path, capsys, name, command):
    text, needles = CASES[name]
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    args = [command, "h100-sxm", str(bad)]
    args += ["--out", str(tmp_path / "out")] if command == "validate" else ["-o", str(tmp_path / "calib.yaml")]
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert str(bad) in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "calib.yaml").exists()


def test_device_filter_selects_rows(tmp_path, capsys):
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(GOOD + "gemm,bf16,128,4096,4096,20.5,GPU-B,test\n")
    code, _ = run_cli(["validate", "h100-sxm", str(mixed), "--device", "GPU-A", "--out", str(tmp_path / "v"),
                       "--calibration", "none"], capsys)
    assert code == 0
    assert sum(1 for _ in open(tmp_path / "v" / "predictions.csv")) == 2  # header + the GPU-A row


def test_validate_writes_predictions_and_plot(tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    code, _ = run_cli(["validate", "h100-sxm", str(good), "--out", str(tmp_path / "v"), "--calibration", "none"],
                      capsys)
    assert code == 0
    header = open(tmp_path / "v" / "predictions.csv").readline().strip().split(",")
    assert header[-4:] == ["predicted_us", "error_pct", "source", "in_sample"]
    assert "measurement_source" in header
    assert (tmp_path / "v" / "predicted_vs_measured.png").stat().st_size > 1000


def test_validate_predicts_mixed_attention_rows(tmp_path, capsys):
    """An `attn_mixed` row is timed as a run times that step: its prefill chunk alone plus its
    decodes alone times the mixed-step factor, uncalibrated 1 + 0.2 x (32 / 8 - 1) = 1.6
    (perf/mixed_attention.py); it is predicted, printed and plotted like any other row."""
    rows = tmp_path / "mixed.csv"
    rows.write_text("op,dtype,batch,seq_len,kv_len,prefill_kv_len,heads,kv_heads,head_dim,time_us,device\n"
                    "attn_prefill,bf16,1,512,1024,,32,8,128,100,GPU-A\n"
                    "attn_decode,bf16,16,,2048,,32,8,128,50,GPU-A\n"
                    "attn_mixed,bf16,16,512,2048,1024,32,8,128,200,GPU-A\n")
    code, err = run_cli(["validate", "h100-sxm", str(rows), "--out", str(tmp_path / "v"), "--calibration", "none"],
                        capsys)
    assert code == 0, err
    predicted = pd.read_csv(tmp_path / "v" / "predictions.csv").set_index("op")
    assert predicted.loc["attn_mixed", "predicted_us"] == pytest.approx(
        predicted.loc["attn_prefill", "predicted_us"] + 1.6 * predicted.loc["attn_decode", "predicted_us"])
    assert predicted.loc["attn_mixed", "source"] == "roofline"
