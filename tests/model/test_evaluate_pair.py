"""evaluate --pair: a model trained on the random pair scores on any named pair; others only on theirs."""

import pytest

from sgf_deploy.errors import InputError
from sgf_deploy.model.evaluate import evaluate
from sgf_deploy.model.locate import DEFAULTS_DIR

MIXED = DEFAULTS_DIR / "lite-recon4x-mixed.pt"  # trained on --pair random (with named pairs mixed in)
OLD = DEFAULTS_DIR / "lite-recon4x-t1-t2.pt"


def test_random_model_scores_on_a_named_pair(torch_threads):
    result = evaluate([OLD, MIXED], pair="t1-t2", n=2)
    assert result["pair"] == "t1-t2" and [r["name"] for r in result["rows"]][1:] == [
        "SGF-MRI (lite-recon4x-t1-t2.pt)", "SGF-MRI (lite-recon4x-mixed.pt)"]
    pd = evaluate([MIXED], pair="t1-pd", n=2)
    assert pd["rows"][1]["psnr"] > pd["rows"][0]["psnr"]  # better than zero-filled on a pair it mixed in


def test_pair_specific_model_is_refused_on_another_pair(torch_threads):
    with pytest.raises(InputError, match="trained for t1-t2 recon4x, evaluating pd-t2 recon4x"):
        evaluate([OLD], pair="pd-t2", n=2)
