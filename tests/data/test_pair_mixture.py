"""--mix: named pairs mixed into the simulator's pair for training."""

import numpy as np
import pytest

from sgf_deploy.data.pair_mixture import draw_pair, parse_mix
from sgf_deploy.errors import InputError


def test_fractions_are_parsed_and_drawn_in_proportion():
    mix = parse_mix("t1-t2=0.25, pd-t2=0.05")
    assert mix == {"t1-t2": 0.25, "pd-t2": 0.05}
    rng = np.random.default_rng(0)
    draws = [draw_pair(rng, "random", mix) for _ in range(20000)]
    assert abs(draws.count("t1-t2") / 20000 - 0.25) < 0.015
    assert abs(draws.count("pd-t2") / 20000 - 0.05) < 0.008
    assert abs(draws.count("random") / 20000 - 0.70) < 0.015
    assert draw_pair(np.random.default_rng(0), "random", {}) == "random"


@pytest.mark.parametrize("text, match", [("t1-t3=0.2", "NAME=FRACTION"), ("t1-t2", "NAME=FRACTION"),
                                         ("t1-t2=x", "not a number"), ("t1-t2=1.5", r"\[0, 1\]"),
                                         ("t1-t2=0.6,pd-t2=0.6", "sum to")])
def test_bad_mix_is_one_line(text, match):
    with pytest.raises(InputError, match=match):
        parse_mix(text)


def test_mix_is_refused_for_a_users_folder(tmp_path):
    from sgf_deploy.errors import SgfError
    from sgf_deploy.model.train import TrainSettings, train

    with pytest.raises(SgfError, match="--mix"):
        train(TrainSettings(data=str(tmp_path), mix="t1-t2=0.5"), tmp_path / "out.pt")
