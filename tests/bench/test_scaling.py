"""Scaling study mechanics at tiny sizes (1 repeat; no timed assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sgf_deploy.bench import machine as M
from sgf_deploy.bench import scaling as S


def test_plan_caps_paper_and_marks_cross_attention_over_budget():
    plan = S.plan_items([128, 512], paper_max=384, mem_budget_gb=6.0)
    assert "net/paper" in plan[128] and "net/paper" not in plan[512]
    assert "attn/paper/1" in plan[128] and "attn/lite/3" in plan[512]
    assert "xattn/full" in plan[128]  # 2 x (16384^2 x 4 B) = 2 GiB <= 6 GB
    assert "xattn/full" not in plan[512] and "xattn/half" not in plan[512]
    assert S.xattn_matrix_bytes("full", 512) == (512 * 512) ** 2 * 4
    assert S.xattn_tokens("half", 320) == 160 * 160


def test_run_scaling_tiny(tmp_path):
    record = S.run_scaling([16, 24], repeat=1, presets=("lite",), memory=False, mem_budget_gb=0.01, echo=None)
    res = record["results"]
    assert set(res["items"]) >= {"mcns/torch", "mcns/ort", "net/lite", "attn/lite/3", "xattn/full", "xattn/half"}
    for item in ("mcns/torch", "mcns/ort"):
        assert res["fits"][item]["time"]["n"] == 2
    att = res["attention"]["lite"]
    assert [r["size"] for r in att["per_size"]] == [16, 24]
    assert att["per_size"][0]["tokens"] == {"3": 4}
    assert record["loadavg_start"] is not None or record["loadavg_start"] is None
    json.dumps(record)  # JSON-ready
    assert S.summary_lines(record)


def test_memory_probe_of_mcns_in_ort():
    res = M.run_probe(S.MODULE, {"item": "mcns/ort", "size": 32}, timeout=600)
    assert "error" not in res, res
    assert res["peak_rss_mb"] > 0 and res["cold_seconds"] > 0
    if res["peak_reset"]:
        assert res["delta_mb"] >= 0


def test_mcns_ort_matches_torch_op():
    """The two MCNS items time the same computation."""
    torch_k, ort_k = S._Kernels("torch"), S._Kernels("ort")
    a = torch_k.build("mcns/torch", 16)()
    b = ort_k.build("mcns/ort", 16)()
    np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)


def _fake_record() -> dict:
    sizes = [128, 256, 512]
    times = {"mcns/torch": {s: [1e-8 * s * s] for s in sizes}, "mcns/ort": {s: [0.8e-8 * s * s] for s in sizes},
             "net/lite": {s: [2e-7 * s * s + 1e-13 * (s * s / 64) ** 2] for s in sizes},
             "attn/lite/3": {s: [1e-13 * (s * s / 64) ** 2] for s in sizes},
             "xattn/full": {128: [0.5]}, "xattn/half": {128: [0.01], 256: [0.5]}}
    mem = {"mcns/torch": {s: {"delta_mb": 1e-4 * s * s} for s in sizes},
           "xattn/full": {128: {"delta_mb": 2100.0}}}
    res = S.analyse(sizes, times, mem, ("lite",), 384, 6.0)
    return {"machine": M.machine_info(), "loadavg_start": [1, 1, 1], "loadavg_end": [1, 1, 1],
            "settings": {"sizes": sizes, "mem_budget_gb": 6.0}, "results": res}


def test_analyse_fits_and_crossover():
    res = _fake_record()["results"]
    assert res["fits"]["mcns/torch"]["time"]["exponent"] == pytest.approx(1.0, abs=1e-6)
    assert res["fits"]["mcns/torch"]["memory"]["exponent"] == pytest.approx(1.0, abs=1e-6)
    lite = res["attention"]["lite"]
    assert lite["fit_attention"]["exponent"] == pytest.approx(2.0, abs=1e-6)
    # attention = rest: 1e-13 P^2 / 4096 = 2e-7 P -> P = 8.192e9
    assert lite["crossover_fit_pixels"] == pytest.approx(2e-7 * 4096 / 1e-13, rel=1e-4)
    assert lite["crossover_measured_size"] is None
    full = {r["size"]: r for r in res["xattn"]["full"]["rows"]}
    assert full[512].get("exceeds_budget") and "not run" in full[512]["note"]
    assert full[128]["memory_delta_mb"] == 2100.0


def test_plot_writes_png(tmp_path):
    from sgf_deploy.bench.plot import plot_scaling

    out = plot_scaling(_fake_record(), tmp_path / "scaling.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
