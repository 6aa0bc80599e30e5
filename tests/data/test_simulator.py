import time

import numpy as np
import pytest

from sgf_deploy.data import simulator as sim
from sgf_deploy.errors import InputError


@pytest.fixture(scope="module")
def volumes():
    pytest.importorskip("nilearn", reason="the simulator needs nilearn's MNI152 templates")
    return sim._volumes()


def _arrays(ex):
    return [ex.reference, ex.target, ex.ground_truth] + ([ex.mask] if ex.mask is not None else [])


def test_constants():
    assert sim.PAIRS == {"t1-t2": ("T1w", "T2w"), "t1-flair": ("T1w", "FLAIR"), "pd-t2": ("PD", "T2w"),
                         "t1-pd": ("T1w", "PD"), "t2-flair": ("T2w", "FLAIR")}
    assert sim.PAIR_CHOICES == tuple(sim.PAIRS) + ("random",)
    assert sim.TISSUES["csf"] == (1.0, 2569.0, 329.0) and sim.TISSUES["muscle"] == (1.0, 900.0, 47.0)
    assert sim.SPLITS == ("train", "val", "test")


def test_signal_equation_ordering():
    s = {c: {t: sim.signal(c, *p) for t, p in sim.TISSUES.items()} for c in sim.SEQUENCES}
    assert s["T1w"]["wm"] > s["T1w"]["gm"] > s["T1w"]["csf"]
    assert s["T2w"]["csf"] > s["T2w"]["gm"] > s["T2w"]["wm"]
    assert s["FLAIR"]["csf"] < 0.3 * min(s["FLAIR"]["gm"], s["FLAIR"]["wm"])
    assert s["T1w"]["fat"] > s["T1w"]["wm"]  # bright scalp fat on T1w


def test_splits_disjoint_with_guards():
    subjects = {s: set(sim.split_subjects(s)) for s in sim.SPLITS}
    slices = {s: sim.split_slices(s) for s in sim.SPLITS}
    for s in sim.SPLITS:
        assert len(slices[s]) >= 12 and len(subjects[s]) >= 100
    for a in sim.SPLITS:
        for b in sim.SPLITS:
            if a < b:
                assert not subjects[a] & subjects[b]
                # no shared template plane nor neighbour: every slice reads planes z-MAX_DZ..z+MAX_DZ
                gap = min(abs(za - zb) for za in slices[a] for zb in slices[b])
                assert gap >= 2 * sim.MAX_DZ + 2, (a, b, gap)
    # each split samples several brain levels (interleaved blocks)
    for s in ("val", "test"):
        assert max(slices[s]) - min(slices[s]) > 40


def test_through_plane_warp_bounded():
    for subject in list(sim.split_subjects("train"))[:20]:
        sub = sim._subject_params(0, "train", subject)
        qx, qy, qz = sim._coordinates(sub, 60)
        assert np.abs(qz - 60).max() <= sim.MAX_DZ + 1e-9
        assert np.abs(qx - sim._grid()[0][None, :]).max() > 0.5  # it does warp in plane


def test_usable_slices_follow_brain_area_rule(volumes):
    area = sim.brain_area()
    kept = np.flatnonzero(area >= sim.MIN_BRAIN_FRACTION * area.max())
    assert (kept.min(), kept.max()) == sim.USABLE_Z


def test_example_shapes_and_determinism(volumes):
    a = sim.make_example("t1-t2", "recon4x", "train", 5, 60, seed=3)
    b = sim.make_example("t1-t2", "recon4x", "train", 5, 60, seed=3)
    for x in (a.reference, a.target, a.ground_truth):
        assert x.shape == sim.SHAPE and x.dtype == np.float32 and np.all(np.isfinite(x)) and x.min() >= 0
    assert a.mask.shape == (sim.SHAPE[1],) and a.mask.dtype == bool
    assert (a.subject, a.slice_index) == (5, 60)
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.tobytes() == y.tobytes()
    c = sim.make_example("t1-t2", "recon4x", "train", 5, 60, seed=4)
    d = sim.make_example("t1-t2", "recon4x", "train", 6, 60, seed=3)
    assert not np.array_equal(a.ground_truth, c.ground_truth)
    assert not np.array_equal(a.ground_truth, d.ground_truth)
    assert not np.array_equal(a.mask, c.mask)


def test_ground_truth_independent_of_task_and_reference_of_pair(volumes):
    a = sim.make_example("t1-t2", "recon8x", "val", 10_003, 46)
    b = sim.make_example("t1-t2", "sr4x", "val", 10_003, 46)
    c = sim.make_example("t1-flair", "sr2x", "val", 10_003, 46)
    np.testing.assert_array_equal(a.ground_truth, b.ground_truth)
    np.testing.assert_array_equal(a.reference, c.reference)  # same T1w anatomy and noise
    assert b.mask is None
    assert not np.array_equal(a.target, a.ground_truth)
    np.testing.assert_array_equal(b.target, sim.degrade_with_mask(b.ground_truth, "sr4x")[0])


@pytest.mark.parametrize("split,subject,z", [("train", 12, 85), ("val", 10_001, 102), ("test", 20_007, 74)])
def test_contrast_ordering_measured_with_tissue_maps(volumes, split, subject, z):
    maps = sim.tissue_maps(split, subject, z)
    # the 40 purest voxels of each tissue (some slices have no CSF voxel above 0.9)
    pure = {t: np.argsort(maps[t].ravel())[-40:] for t in ("csf", "gm", "wm")}
    for t, idx in pure.items():
        assert maps[t].ravel()[idx].min() > 0.7, t
    means = {}
    for pair in ("t1-t2", "t1-flair", "pd-t2"):
        ex = sim.make_example(pair, "sr2x", split, subject, z)
        ref_name, tar_name = sim.PAIRS[pair]
        for name, img in ((ref_name, ex.reference), (tar_name, ex.ground_truth)):
            means[name] = {t: float(img.ravel()[idx].mean()) for t, idx in pure.items()}
    t1, t2, flair = means["T1w"], means["T2w"], means["FLAIR"]
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] > t2["gm"] > t2["wm"]
    assert flair["csf"] < 0.6 * min(flair["gm"], flair["wm"])


def test_not_cartoon_flat(volumes):
    ex = sim.make_example("t1-t2", "recon4x", "train", 1, 90)
    maps = sim.tissue_maps("train", 1, 90)
    wm = maps["wm"] > 0.95
    rel = ex.ground_truth[wm].std() / ex.ground_truth[wm].mean()
    assert 0.01 < rel < 0.25
    background = (sum(maps.values()) < 1e-3)
    assert background.sum() > 1000
    noise = ex.ground_truth[background].mean() / ex.ground_truth.max()
    assert 0.005 < noise < 0.04  # Rician background of ~1-2 % noise
    # subjects differ in shape (warps), not only in noise
    other = sim.tissue_maps("train", 2, 90)
    assert np.abs(other["wm"] - maps["wm"]).mean() > 0.02


def test_simulate(volumes):
    d = sim.simulate("pd-t2", "recon4x", "val", 3, seed=7)
    assert set(d) == {"reference", "target", "ground_truth", "subject", "slice_index", "mask"}
    assert d["mask"].shape == (3, sim.SHAPE[1]) and d["mask"].dtype == bool
    assert "mask" not in sim.simulate("pd-t2", "sr2x", "val", 1, seed=7)
    for k in ("reference", "target", "ground_truth"):
        assert d[k].shape == (3,) + sim.SHAPE and d[k].dtype == np.float32
    assert set(d["subject"]) <= set(sim.split_subjects("val"))
    assert set(d["slice_index"]) <= set(sim.split_slices("val"))
    e = sim.simulate("pd-t2", "recon4x", "val", 2, seed=7)
    for k in e:
        assert e[k].tobytes() == d[k][:2].tobytes()
    f = sim.simulate("pd-t2", "recon4x", "val", 2, seed=8)
    assert not np.array_equal(e["ground_truth"], f["ground_truth"])


def test_wrong_split_ids_rejected():
    with pytest.raises(InputError):
        sim.make_example("t1-t2", "recon4x", "test", 5, sim.split_slices("test")[0])  # train subject
    with pytest.raises(InputError):
        sim.make_example("t1-t2", "recon4x", "train", 5, sim.split_slices("test")[0])  # test slice
    with pytest.raises(InputError):
        sim.make_example("t2-t1", "recon4x", "train", 5, 60)
    with pytest.raises(InputError):
        sim.split_slices("holdout")


def test_example_stream(volumes):
    s1 = sim.ExampleStream("t1-t2", "sr2x", seed=2)
    s2 = sim.ExampleStream("t1-t2", "sr2x", split="train", seed=2)
    a, b = next(s1), next(s2)
    assert isinstance(a, sim.Example)
    assert a.subject in sim.split_subjects("train") and a.slice_index in sim.split_slices("train")
    np.testing.assert_array_equal(a.ground_truth, b.ground_truth)
    second = next(s1)
    resumed = next(sim.ExampleStream("t1-t2", "sr2x", seed=2, position=1))
    np.testing.assert_array_equal(second.target, resumed.target)
    assert (second.subject, second.slice_index) != (a.subject, a.slice_index)


def test_one_example_is_fast(volumes):
    sim.make_example("t1-t2", "recon4x", "train", 0, 60)
    times = []
    for i in range(7):
        t = time.perf_counter()
        sim.make_example("t1-t2", "recon4x", "train", i, 60)
        times.append(time.perf_counter() - t)
    assert np.median(times) < 0.1  # ~12 ms on 2 cores; loose for loaded machines


def test_sample_round_trip(volumes, tmp_path):
    from sgf_deploy.data.sample import sample, write_sample
    from sgf_deploy.errors import OutputExistsError

    ex = sim.make_example("t1-t2", "recon4x", "test", 20_000, 74)
    write_sample(tmp_path / "s", ex, {"pair": "t1-t2", "task": "recon4x"})
    got = sample(tmp_path / "s")
    for k in ("reference", "target", "ground_truth"):
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], getattr(ex, k))
    assert got["meta"]["task"] == "recon4x" and got["meta"]["slice_index"] == 74
    assert np.array_equal(np.array(got["meta"]["mask"], bool), ex.mask)
    with pytest.raises(OutputExistsError):
        write_sample(tmp_path / "s", ex, {})
    (tmp_path / "s" / "target.npy").write_bytes(b"garbage")
    with pytest.raises(InputError):
        sample(tmp_path / "s")
