"""The contrast-fidelity guard, ``run --task`` and the shipped defaults (torch-free paths)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from sgf_deploy.cli import cli
from sgf_deploy.model.registry import default_for_task, read_registry, shipped_models
from sgf_deploy.runtime import fidelity as F

OLD = "lite-recon4x-t1-t2"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def old_default(cache):
    """The old T1->T2 default as the cached engine, built from its shipped ONNX (no torch)."""
    from sgf_deploy.runtime.embedded import default_engine
    from sgf_deploy.runtime.reconstructor import Reconstructor

    model = shipped_models()[OLD]
    engine, built = default_engine(cache=cache, checkpoint=model.checkpoint_path)
    assert built
    return model, Reconstructor.load(engine, threads=1)


@pytest.fixture(scope="module")
def sim_sets():
    pytest.importorskip("nilearn", reason="the simulator needs nilearn's MNI152 templates")
    from sgf_deploy.data.simulator import simulate

    return {pair: simulate(pair, "recon4x", "test", 3, seed=4242) for pair in ("t1-t2", "t1-pd")}


@pytest.fixture(scope="module")
def outputs(old_default, sim_sets):
    rec = old_default[1]
    return {pair: rec(d["reference"], d["target"]) for pair, d in sim_sets.items()}


def test_band_masks():
    band = F.band_mask("recon4x", (20, 100))
    assert band[:, 46:54].all() and band.sum() == 20 * 8  # 8 % of the columns, all rows
    sr = F.band_mask("sr4x", (40, 40))
    assert sr.sum() == 100 and sr[20, 20]
    mask = np.zeros(11, bool)
    mask[[1, 4, 5, 6, 9]] = True
    assert np.flatnonzero(F._central_run(mask)).tolist() == [4, 5, 6]
    assert F.task_from_mask(np.r_[np.ones(25, bool), np.zeros(75, bool)]) == "recon4x"
    assert F.task_from_mask(np.r_[np.ones(12, bool), np.zeros(88, bool)]) == "recon8x"


def test_score_zero_for_the_target_itself_and_large_for_another_contrast():
    rng = np.random.default_rng(0)
    target = rng.random((2, 64, 48)).astype(np.float32)
    same = F.assess(target, target, "recon4x", 0.05, "test")
    assert same.score == 0 and not same.exceeded
    other = F.assess(1.0 - target, target, "recon4x", 0.05, "test")
    assert other.exceeded and "model may not match this contrast" in other.warning()
    assert "EXCEEDED" in other.line()


def test_registry_records_defaults_and_calibration():
    reg = read_registry()
    assert reg["tasks"]["recon4x"] in reg["models"]
    for name, m in shipped_models().items():
        assert m.checkpoint_path.is_file() and m.onnx_path.is_file() and m.selfcheck["passed"] is True, name
        assert m.tasks and m.contrasts
    old = shipped_models()[OLD]
    cal = old.fidelity["recon4x"]
    assert cal["test_false_alarms"] == {"t1-t2": 0}  # calibrated on val, zero false alarms on test
    assert old.threshold("recon4x") > old.threshold("recon4x", "measured") > 0


def test_guard_fires_on_t1_t2_model_with_pd_target_and_not_in_distribution(old_default, sim_sets, outputs):
    model, rec = old_default
    for mode in ("measured", "centre"):
        thr = model.threshold("recon4x", mode)
        scores = {}
        for pair, d in sim_sets.items():
            out = outputs[pair]
            mask = d["mask"] if mode == "measured" else [None] * 3
            scores[pair] = [F.assess(out[i], d["target"][i], "recon4x", thr, mask=mask[i]) for i in range(3)]
        assert not any(f.exceeded for f in scores["t1-t2"]), (mode, [f.score for f in scores["t1-t2"]])
        if mode == "measured":  # with the mask: every mismatched slice fires
            assert all(f.exceeded for f in scores["t1-pd"]), [f.score for f in scores["t1-pd"]]
        # the guard inside a run (the volume's score): warns, or refuses with strict
        d = sim_sets["t1-pd"]
        out = outputs["t1-pd"]
        warnings = []
        mask = d["mask"][0] if mode == "measured" else None
        vol = F.guard(out[:1], d["target"][:1], rec, "recon4x", mask, False, warnings.append)
        assert vol.exceeded == bool(warnings)
        if mode == "measured":
            assert warnings and "contrast differs from the measured data" in warnings[0]
            with pytest.raises(F.ContrastMismatchError, match="--strict"):
                F.guard(out[:1], d["target"][:1], rec, "recon4x", mask, True, warnings.append)


def test_run_task_picks_default_and_h5_mask_sets_task(tmp_path, monkeypatch, old_default, cache, sim_sets):
    h5py = pytest.importorskip("h5py")
    from sgf_deploy.data.kspace import fft2c

    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(cache))
    d = sim_sets["t1-t2"]
    np.save(tmp_path / "ref.npy", d["reference"][:1])
    np.save(tmp_path / "tar.npy", d["target"][:1])
    runner = CliRunner()
    res = runner.invoke(cli, ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                              "--task", "recon4x", "--register", "off", "--threads", "1"])
    assert res.exit_code == 0, res.output
    name = default_for_task("recon4x").name
    assert f"model:   {name}" in res.output and "fidelity:" in res.output
    assert "k-space centre" in res.output
    res = runner.invoke(cli, ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                              "--task", "recon8x", "--register", "off", "--threads", "1",
                              "--out", str(tmp_path / "o8.npy")])
    assert res.exit_code == 0, res.output
    assert "model:   lite-recon8x-mixed (trained for recon8x" in res.output and (tmp_path / "o8.npy").is_file()
    res = runner.invoke(cli, ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                              "--task", "sr4x", "--register", "off", "--out", str(tmp_path / "o.npy")])
    assert res.exit_code == 2 and "no shipped default model for task sr4x" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o.npy").exists()
    # k-space input with a mask of a PD target: the task follows from the mask; the default (trained
    # on randomised contrasts) passes the guard, the old T1->T2 model fails it (measured-mode guard)
    # and is refused with --strict
    p = sim_sets["t1-pd"]
    with h5py.File(tmp_path / "pd.h5", "w") as f:
        f["kspace"] = fft2c(p["ground_truth"][:1]).astype(np.complex64)
        f["mask"] = p["mask"][0].astype(np.float32)
    np.save(tmp_path / "pdref.npy", p["reference"][:1])
    args = ["run", "--ref", str(tmp_path / "pdref.npy"), "--target", str(tmp_path / "pd.h5"), "--register", "off",
            "--engine", "auto", "--task", "recon8x", "--out", str(tmp_path / "pd_default.h5")]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "i.e. recon4x; --task recon8x is overridden" in res.output
    assert f"model:   {name}" in res.output and "EXCEEDED" not in res.output
    args = args[:-4] + ["--engine", OLD, "--out", str(tmp_path / "pd_out.h5")]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "mask re-applied" in res.output and "EXCEEDED" in res.output
    assert "the output's contrast differs from the measured data" in res.output
    res = runner.invoke(cli, args[:-2] + ["--out", str(tmp_path / "pd_strict.h5"), "--strict"])
    assert res.exit_code == 3 and "refused (--strict)" in res.output
    assert not (tmp_path / "pd_strict.h5").exists()


def test_engine_by_shipped_name(tmp_path, monkeypatch, cache, sim_sets):
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(cache))
    d = sim_sets["t1-t2"]
    np.save(tmp_path / "ref.npy", d["reference"][:1])
    np.save(tmp_path / "tar.npy", d["target"][:1])
    res = CliRunner().invoke(cli, ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                                   "--engine", OLD, "--register", "off", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert f"model:   {OLD} (trained for recon4x" in res.output and "calibrated for " + OLD in res.output
    res = CliRunner().invoke(cli, ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                                   "--engine", "no-such-model", "--out", str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and "nor the name of a shipped model" in res.output
