"""Scaling study mechanics at tiny sizes (1 repeat; no timed assertions)."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest

from sgf_deploy.bench import machine as M
from sgf_deploy.bench.scaling import plan as P
from sgf_deploy.bench.scaling.analyse import analyse
from sgf_deploy.bench.scaling.kernels import Kernels
from sgf_deploy.bench.scaling.render import markdown, summary_lines
from sgf_deploy.bench.scaling.run import run_scaling
from sgf_deploy.bench.settings import ScalingBenchSettings
from sgf_deploy.bench.workers import MODULE


def test_plan_caps_paper_and_marks_cross_attention_over_budget():
    plan, skipped = P.plan_items([128, 320, 384, 512], paper_max=512, mem_budget_gb=6.0)
    assert "net/paper" in plan[320] and "net/paper" not in plan[384]
    assert "math kernel" in skipped[384]["net/paper"] and "budget 6 GB" in skipped[384]["net/paper"]
    assert {"attn/paper/1", "attnc/paper/1", "attn/lite/3", "attnc/lite/3"} <= set(plan[128])
    assert "net/lite" in plan[512]  # 4096 bottleneck tokens: small
    plan2, skipped2 = P.plan_items([256], paper_max=192, mem_budget_gb=6.0)
    assert "net/paper" not in plan2[256] and "--paper-max" in skipped2[256]["net/paper"]
    assert "xattn/full" in plan[128]  # 2 x (16384^2 x 4 B) = 2 GiB <= 6 GB
    assert "xattn/full" not in plan[512] and "xattn/half" not in plan[512]
    assert P.xattn_matrix_bytes("full", 512) == (512 * 512) ** 2 * 4
    assert P.xattn_tokens("half", 320) == 160 * 160
    assert P.net_attention_bytes("paper", 320) == 2 * (160 * 160) ** 2 * 4


def test_run_scaling_tiny(tmp_path):
    settings = ScalingBenchSettings(sizes=[16, 24], repeat=1, presets=("lite",), memory=False, mem_budget_gb=0.01)
    record = run_scaling(settings, echo=None)
    res = record["results"]
    assert set(res["items"]) >= {"mcns/torch", "mcns/torch-reuse", "mcns/ort", "net/lite", "attn/lite/3", "attnc/lite/3",
                                 "xattn/full", "xattn/half"}
    for item in P.MCNS_ITEMS:
        assert res["fits"][item]["time"]["n"] == 2 and res["fits"][item]["cpu"]["n"] == 2
        assert "cpu_user" in res["fits"][item]  # None when rusage ticks gave 0 s at these tiny sizes
        for r in res["items"][item]:
            assert r["cpu_s"]["n"] == 1 and r["sys_s"]["n"] == 1 and r["minor_faults"]["n"] == 1
            # one call each: its user and system parts add up to its process CPU time (rusage ticks are coarser)
            assert r["user_s"]["median"] + r["sys_s"]["median"] == pytest.approx(r["cpu_s"]["median"], abs=0.02)
    assert record["settings"]["torch_reuse_env"] == P.REUSE_MALLOC_ENV
    att = res["attention"]["lite"]
    assert [r["size"] for r in att["per_size"]] == [16, 24]
    assert att["per_size"][0]["tokens"] == {"3": 4}
    assert "loadavg_start" in record and "loadavg_end" in record
    json.dumps(record)  # JSON-ready
    assert summary_lines(record)


@pytest.mark.parametrize("item", ["mcns/ort", "attn/lite/3"])
def test_memory_probe(item):
    res = M.run_probe(MODULE, {"study": "scaling", "item": item, "size": 32}, timeout=600)
    assert "error" not in res, res
    assert res["peak_rss_mb"] > 0 and res["cold_seconds"] > 0
    if res["peak_reset"]:
        assert res["delta_mb"] == pytest.approx(res["peak_rss_mb"] - res["rss_before_mb"])


def test_memory_probe_sees_the_call_grow():
    """The probe measures the call: MCNS at 160^2 writes a 26 MB output (256 channels, float32)
    where 32^2 writes 1 MB, so its peak above the warm process must be larger by most of that."""
    small, large = (M.run_probe(MODULE, {"study": "scaling", "item": "mcns/ort", "size": s}, timeout=600) for s in (32, 160))
    if not (small["peak_reset"] and large["peak_reset"]):
        pytest.skip("this kernel cannot reset the peak RSS counter (/proc/self/clear_refs)")
    assert large["delta_mb"] > small["delta_mb"] + 20


def test_workers_and_their_environments():
    assert P.backend_of("mcns/ort") == "ort"
    assert P.backend_of("mcns/torch") == "torch" and P.backend_of("net/lite") == "torch"
    assert P.backend_of("mcns/torch-reuse") == "torch-reuse"
    assert P.backend_env("torch") == {} and P.backend_env("ort") == {}
    assert P.backend_env("torch-reuse")["MALLOC_MMAP_THRESHOLD_"] == str(1 << 30)


_TIME_ONCE_CHECK = """
from sgf_deploy.bench.scaling import plan as P
from sgf_deploy.bench.scaling.kernels import Kernels
k = Kernels("torch")
r = k.time_once("xattn/full", 64, warmup=True)
assert set(r) == {"seconds", "cpu_seconds", "user_seconds", "sys_seconds", "minor_faults"}, r
assert r["seconds"] > 0, r
assert r["minor_faults"] >= P.xattn_matrix_bytes("full", 64) / 4096, r
small = k.time_once("mcns/torch", 16, warmup=True)
assert small["minor_faults"] < 0.1 * r["minor_faults"], (small, r)
assert abs(r["user_seconds"] + r["sys_seconds"] - r["cpu_seconds"]) <= 0.02, r
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="relies on glibc mapping large blocks afresh")
def test_time_once_splits_cpu_time_and_counts_faults():
    """The faults counted are the timed call's own: full cross-attention at 64x64 has the math
    kernel allocate N x N = 4096^2 fp32 scores (64 MiB, above glibc's largest mmap threshold), which
    are mapped afresh and faulted in on every call, warm-up or not; a small call right after
    counts only its own few faults, not the total so far; rusage and process_time count the same
    threads (rusage ticks are coarser). Checked in a fresh interpreter, as the benchmark's workers
    run: in a long pytest process, a library loaded by another test can change how glibc maps
    large blocks (the 64 MiB then came back already faulted in: 0 faults)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _TIME_ONCE_CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")
def test_reuse_worker_avoids_the_page_faults_of_large_temporaries():
    """Why mcns/torch-reuse exists: at 384x384 the composite's 64-channel temporaries (37.7 MB)
    exceed glibc's largest mmap threshold (32 MB), so with the defaults each call maps them afresh
    and faults every page in; the reuse worker's heap keeps them."""
    faults = {}
    for backend in ("torch", "torch-reuse"):
        with M.Worker(MODULE, {"study": "scaling", "backend": backend, "name": f"test-{backend}"},
                      env=P.backend_env(backend)) as w:
            w.call(item=f"mcns/{backend}", size=384)  # first call: warm-up inside, then one timed call
            faults[backend] = w.call(item=f"mcns/{backend}", size=384)["minor_faults"]
    pages_per_tensor = 64 * 384 * 384 * 4 / 4096
    assert faults["torch"] > pages_per_tensor  # at least one temporary faulted in again
    assert faults["torch-reuse"] < 0.25 * faults["torch"], faults


def test_attention_items_compute_the_same_values():
    """attn (SFA's transposed layout) and attnc (contiguous) differ only in memory layout."""
    k = Kernels("torch")
    a, c = k.build("attn/paper/1", 32)(), k.build("attnc/paper/1", 32)()
    np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-5, atol=1e-6)


def test_mcns_ort_matches_torch_op():
    """The two MCNS items time the same computation."""
    torch_k, ort_k = Kernels("torch"), Kernels("ort")
    a = torch_k.build("mcns/torch", 16)()
    b = ort_k.build("mcns/ort", 16)()
    np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-5)


def _fake_record() -> dict:
    sizes = [128, 256, 512]
    times = {"mcns/torch": {s: [1e-8 * s * s] for s in sizes}, "mcns/ort": {s: [0.8e-8 * s * s] for s in sizes},
             "net/lite": {s: [2e-7 * s * s + 1e-13 * (s * s / 64) ** 2] for s in sizes},
             "attn/lite/3": {s: [1e-13 * (s * s / 64) ** 2] for s in sizes},
             "attnc/lite/3": {s: [0.5e-13 * (s * s / 64) ** 2] for s in sizes},
             "xattn/full": {128: [0.5]}, "xattn/half": {128: [0.01], 256: [0.5]}}
    mem = {"mcns/torch": {s: {"delta_mb": 1e-4 * s * s} for s in sizes},
           "xattn/full": {128: {"delta_mb": 2100.0}}}
    times["mcns/torch-reuse"] = {s: [0.9e-8 * s * s] for s in sizes}
    cpu = {k: {s: [x * 1.5 for x in v] for s, v in per.items()} for k, per in times.items()}
    extra = {"user_s": {k: {s: [x * 1.2 for x in v] for s, v in per.items()} for k, per in times.items() if k.startswith("mcns")},
             "sys_s": {k: {s: [x * 0.3 for x in v] for s, v in per.items()} for k, per in times.items() if k.startswith("mcns")},
             "minor_faults": {k: {s: [float(s)] for s in sizes} for k in P.MCNS_ITEMS}}
    res = analyse(sizes, times, mem, ("lite",), 384, 6.0, cpu, extra)
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
    assert lite["crossover_fit_side_cpu"] == pytest.approx(lite["crossover_fit_side"], rel=1e-4)
    assert res["fits"]["mcns/torch"]["cpu"]["exponent"] == pytest.approx(1.0, abs=1e-6)
    assert res["fits"]["mcns/torch-reuse"]["cpu_user"]["exponent"] == pytest.approx(1.0, abs=1e-6)
    row = res["items"]["mcns/ort"][1]
    assert row["minor_faults"]["median"] == 256.0 and row["sys_s"]["median"] == pytest.approx(0.3 * 0.8e-8 * 256 * 256)
    full = {r["size"]: r for r in res["xattn"]["full"]["rows"]}
    assert full[512].get("exceeds_budget") and "not run" in full[512]["note"]
    assert full[128]["memory_delta_mb"] == 2100.0


def test_plot_and_markdown(tmp_path):
    from sgf_deploy.bench.plot import plot_scaling

    record = _fake_record()
    out = plot_scaling(record, tmp_path / "scaling.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = markdown(record)
    assert "| mcns/torch |" in text and "| mcns/torch-reuse |" in text and "not run" in text
    assert "minor faults" in text
    assert summary_lines(record)


def test_cli_renders_a_recorded_json(tmp_path):
    """``sgf-deploy bench --markdown JSON --plot PNG``: a recorded run's README tables and PNG, nothing measured."""
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    path = tmp_path / "scaling.json"
    path.write_text(json.dumps(_fake_record() | {"study": "scaling"}))
    res = CliRunner().invoke(cli, ["bench", "--markdown", str(path), "--plot", str(tmp_path / "redrawn.png")])
    assert res.exit_code == 0, res.output
    assert res.output == markdown(json.loads(path.read_text())) + "\n"
    assert (tmp_path / "redrawn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
