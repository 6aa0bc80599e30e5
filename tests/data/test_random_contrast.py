"""The simulator's domain-randomised pair (``--pair random``): deterministic, covers its ranges."""

import numpy as np
import pytest

from sgf_deploy.data import random_contrast as rc
from sgf_deploy.data import simulator as sim
from sgf_deploy.errors import InputError


def test_draws_deterministic_and_cover_every_kind_and_range():
    tissues = tuple(sim.TISSUES)
    draws = [sim.random_contrasts(0, "train", s) for s in range(400)]
    again = [sim.random_contrasts(0, "train", s) for s in range(400)]
    assert draws == again  # a pure function of (seed, split, subject)
    assert draws != [sim.random_contrasts(1, "train", s) for s in range(400)]
    flat = [c for pair in draws for c in pair]
    kinds = {c.kind for c in flat}
    assert kinds == set(rc.KINDS)
    assert {c.params["sequence"] for c in flat if c.kind == "named"} == set(rc.NAMED)
    # every drawn parameter lies in its range, and the draws spread over most of it
    for key, (lo, hi) in rc.RANGES.items():
        if "." not in key:
            continue
        kind, name = key.split(".")
        values = np.array([c.params[name] for c in flat if c.kind == kind])
        assert values.size > 10 and values.min() >= lo and values.max() <= hi, key
        assert values.max() - values.min() > 0.7 * (hi - lo), key
    labels = np.array([[c.params[t] for t in tissues] for c in flat if c.kind == "labels"])
    assert labels.min() >= 0 and labels.max() <= 1 and labels.std(axis=0).min() > 0.2  # independent per tissue
    iso = [c for c in flat if c.kind == "labels" and abs(c.params["gm"] - c.params["wm"]) <= 0.04]
    assert iso  # some references have no grey/white contrast at all
    for name in ("noise", "scale", "bias"):
        values = np.array([getattr(c, name) for c in flat])
        lo, hi = rc.RANGES[name]
        assert values.min() >= lo and values.max() <= hi and values.max() > values.min() * 1.5, name
    res = np.array([c.resolution for c in flat])
    assert (res == 1.0).any() and res.min() < 0.6
    # reference and target of a subject are drawn independently
    assert np.mean([r.kind != t.kind or r.params != t.params for r, t in draws]) > 0.8


def test_signal_equations():
    pd, t1, t2 = sim.TISSUES["wm"]
    se = rc.Contrast("SE", {"TR": 500.0, "TE": 15.0})
    assert rc.tissue_signal(se, pd, t1, t2, "wm", sim.signal) == pytest.approx(sim.signal("T1w", pd, t1, t2))
    gre = rc.Contrast("GRE", {"TR": 20.0, "TE": 5.0, "flip": 90.0})  # flip 90: saturation recovery
    expect = pd * (1 - np.exp(-20.0 / t1)) * np.exp(-5.0 / (rc.T2STAR_FACTOR * t2))
    assert rc.tissue_signal(gre, pd, t1, t2, "wm", sim.signal) == pytest.approx(expect)
    named = rc.Contrast("named", {"sequence": "FLAIR"})
    assert rc.tissue_signal(named, pd, t1, t2, "wm", sim.signal) == pytest.approx(sim.signal("FLAIR", pd, t1, t2))
    with pytest.raises(InputError):
        rc.RandomSpec(named_fraction=1.5).validate()


def test_random_examples_deterministic_and_varied():
    pytest.importorskip("nilearn", reason="the simulator needs nilearn's MNI152 templates")
    z = sim.split_slices("train")[8]
    a = sim.make_example("random", "recon4x", "train", 5, z, seed=3)
    b = sim.make_example("random", "recon4x", "train", 5, z, seed=3)
    for x, y in ((a.reference, b.reference), (a.target, b.target), (a.ground_truth, b.ground_truth)):
        assert x.dtype == np.float32 and np.array_equal(x, y) and np.isfinite(x).all()
    assert np.array_equal(a.mask, b.mask)
    # different subjects: different contrasts (correlation of the ground truths far from 1)
    c = sim.make_example("random", "recon4x", "train", 6, z, seed=3)
    assert np.corrcoef(c.ground_truth.ravel(), a.ground_truth.ravel())[0, 1] < 0.9
    assert not np.array_equal(c.reference, a.reference)
    # the named pairs are unchanged by the random mode (same draws as before for t1-t2)
    t = sim.make_example("t1-t2", "recon4x", "train", 5, z, seed=3)
    assert not np.array_equal(t.ground_truth, a.ground_truth)
    data = sim.simulate("random", "recon8x", "val", 3, seed=1)
    assert data["mask"].shape == (3, sim.SHAPE[1]) and data["reference"].shape == (3,) + sim.SHAPE


def test_new_named_pairs():
    pytest.importorskip("nilearn", reason="the simulator needs nilearn's MNI152 templates")
    z = sim.split_slices("test")[2]
    for pair in ("t1-pd", "t2-flair"):
        ex = sim.make_example(pair, "sr2x", "test", 20_001, z)
        assert ex.mask is None and np.isfinite(ex.target).all()
    with pytest.raises(InputError, match="random"):
        sim.make_example("t3-t9", "recon4x", "test", 20_001, z)


def _tissue_level(contrast, tissue):
    pd, t1, t2 = sim.TISSUES[tissue]
    return rc.tissue_signal(contrast, pd, t1, t2, tissue, sim.signal)


def test_fluid_pairs_invert_the_fluid_and_leave_the_default_draws_alone():
    spec = rc.RandomSpec(fluid_fraction=1.0)
    pairs = [sim.random_contrasts(0, "train", s, spec) for s in range(300)]
    assert pairs == [sim.random_contrasts(0, "train", s, spec) for s in range(300)]  # deterministic
    orders, grey_brighter = set(), []
    for ref, tar in pairs:
        suppressed, bright = (ref, tar) if ref.kind == "IR" else (tar, ref)
        assert {ref.kind, tar.kind} == {"IR", "SE"}
        orders.add(ref.kind)
        # fluid dark (near its null) in the IR image; fluid the
        # brightest brain tissue in the SE image
        assert _tissue_level(suppressed, "csf") < 0.5 * _tissue_level(suppressed, "gm")
        grey_brighter.append(_tissue_level(suppressed, "gm") > _tissue_level(suppressed, "wm"))
        assert _tissue_level(bright, "csf") > _tissue_level(bright, "gm") > _tissue_level(bright, "wm")
        for kind, c in (("IR", suppressed), ("SE", bright)):
            for name in ("TR", "TE"):
                lo, hi = rc.FLUID_RANGES[f"{kind}.{name}"]
                assert lo <= c.params[name] <= hi
    assert np.mean(grey_brighter) > 0.8  # mostly T2-like tissue contrast (short TE: grey ~ white)
    assert orders == {"IR", "SE"}  # both orders: fluid-dark reference -> bright target and back
    # fluid_fraction 0 (the default) draws exactly what the random pair drew before the option
    assert [sim.random_contrasts(0, "train", s) for s in range(50)] == \
        [sim.random_contrasts(0, "train", s, rc.RandomSpec(fluid_fraction=0.0)) for s in range(50)]
    share = np.mean([r.kind in ("IR", "SE") and {r.kind, t.kind} == {"IR", "SE"} and r.params.get("TE", 0) >= 70
                     and t.params.get("TE", 0) >= 70
                     for r, t in (sim.random_contrasts(0, "train", s, rc.RandomSpec(fluid_fraction=0.3))
                                  for s in range(2000))])
    assert 0.25 < share < 0.36
    with pytest.raises(InputError, match="fluid_fraction"):
        rc.RandomSpec(fluid_fraction=-0.1).validate()


def test_fluid_pairs_need_the_random_pair():
    from sgf_deploy.errors import SgfError
    from sgf_deploy.model.train import TrainSettings, train

    with pytest.raises(SgfError, match="--fluid-pairs"):
        train(TrainSettings(pair="t1-t2", fluid_pairs=0.3), "unused.pt")
