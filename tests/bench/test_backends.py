"""Backend comparison mechanics at a tiny size (1 repeat, 2-slice stack; no timed assertions)."""

from __future__ import annotations

import json

import pytest

from sgf_deploy.bench.backends.analyse import judge_bar
from sgf_deploy.bench.backends.build import detect_backends
from sgf_deploy.bench.backends.render import summary_lines
from sgf_deploy.bench.backends.run import run_backends
from sgf_deploy.bench.settings import BackendsBenchSettings


def test_detect_backends_reports_reasons():
    det = detect_backends()
    assert det["onnxruntime-cpu"]["runnable"]
    for name in ("onnxruntime-cuda", "tensorrt", "tensorrt-rtx"):
        assert det[name]["runnable"] or det[name]["reason"]


def test_run_backends_with_an_engine(tmp_path, lite_ckpt, fp32_engine):
    settings = BackendsBenchSettings(engines=[fp32_engine], ckpt=lite_ckpt, sizes=[16], batches=[1, 2], repeat=1, stack=2,
                                     parity_n=1, startup_repeat=1, workdir=tmp_path / "work")
    record = run_backends(settings, echo=None)
    assert [b["name"] for b in record["backends"]] == ["pytorch-fp32", "ort-fp32"]
    for key in ("16x1", "16x2"):
        rows = record["results"][key]["backends"]
        assert rows["pytorch-fp32"]["ratio_vs_pytorch"] == pytest.approx(1.0)
        row = rows["ort-fp32"]
        assert row["latency_ms_per_slice"]["p50"] > 0 and row["throughput_slices_per_s"] > 0
        assert row["peak_rss_mb"] > 0 and row["startup_s"]["n"] == 1 and not row["probe_errors"]
    par = record["parity"]["ort-fp32"]
    assert par["gate"]["precision"] == "fp32" and par["psnr_engine_vs_pytorch_db"]["min"] > 60
    assert record["checkpoint"]["trained"] is False
    assert record["profiles"]["ort-fp32"]["by_op_type"] and record["profiles"]["pytorch-fp32"]["by_op_type"]
    json.dumps(record)
    lines = summary_lines(record)
    assert any("ort-fp32" in line for line in lines)


def test_refuses_an_engine_of_another_checkpoint(tmp_path, fp32_engine):
    import torch

    from sgf_deploy.errors import InputError
    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("lite"), {"task": "recon4x", "pair": "t1-t2", "steps": 0})
    with pytest.raises(InputError, match="built from checkpoint"):
        run_backends(BackendsBenchSettings(engines=[fp32_engine], ckpt=other, sizes=[16], batches=[1], repeat=1, stack=1,
                                           parity_n=1, memory=False, profile=False, workdir=tmp_path / "w"), echo=None)


def test_bad_sizes_and_batches(tmp_path):
    from sgf_deploy.errors import InputError

    with pytest.raises(InputError, match="multiples of 8"):
        run_backends(BackendsBenchSettings(sizes=[20], workdir=tmp_path), echo=None)
    with pytest.raises(InputError, match="must divide"):
        run_backends(BackendsBenchSettings(sizes=[16], batches=[3], stack=32, workdir=tmp_path), echo=None)


def test_judge_bar_flags_shortfall():
    record = {
        "checkpoint": {"config": __import__("sgf_deploy.model.presets", fromlist=["PRESETS"]).PRESETS["lite"].to_dict(),
                       "trained": True},
        "results": {"320x1": {"size": 320, "batch": 1, "backends": {
            "ort-fp32": {"ratio_vs_pytorch": 1.6, "ratio_vs_pytorch_paired_median": 1.6},
            "ort-int8": {"ratio_vs_pytorch": 2.0, "ratio_vs_pytorch_paired_median": 2.1}}}},
        "parity": {"ort-int8": {"psnr_engine_vs_pytorch_db": {"min": 45.0}, "delta_psnr_vs_gt_db": {"mean": -0.05}}},
    }
    bar = judge_bar(record)
    assert bar["preset"] == "lite" and bar["met"] is False
    by = {c["what"].split(" ")[0] + c["what"][-7:]: c for c in bar["checks"]}
    int8 = next(c for c in bar["checks"] if c["what"].startswith("ort-int8 throughput"))
    assert int8["shortfall"] == pytest.approx(0.5) and not int8["pass"]
    assert next(c for c in bar["checks"] if c["what"].startswith("ort-fp32"))["pass"]
    assert all(c["pass"] for c in bar["checks"] if "PSNR" in c["what"])
    assert by


def test_cli_help_and_bad_option():
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--help"])
    assert res.exit_code == 0 and "--engine" in res.output and "--scaling" in res.output
    res = CliRunner().invoke(cli, ["bench", "--sizes", "abc", "--no-memory"])
    assert res.exit_code != 0 and "--sizes" in res.output
