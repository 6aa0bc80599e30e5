"""The report folder: three files, strict JSON, atomic replacement, no silent overwrite."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sgf_deploy.artifacts import sha256_file
from sgf_deploy.errors import OutputExistsError
from sgf_deploy.validate.report import strict_json, write_report


def _report():
    return {"verdict": "fail", "reasons": ["x"], "engine": {"path": "engines/e.onnx", "precision": "int8"},
            "summary": {"n_slices": 1, "parity_psnr": {"min": math.inf}, "delta_psnr": {"mean_diff": np.float64(-0.2)}},
            "thresholds": {"min_parity_psnr": 40.0, "max_delta_psnr": 0.1}, "per_slice": [{"index": 0}],
            "nan": float("nan")}


def _images():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 1, (24, 20))
    return {"reference": gt, "target": gt * 0.9, "ground_truth": gt, "pytorch": gt + 0.01, "engine": gt + 0.02,
            "data_range": 1.0, "volume": "v", "slice": 0, "index": 0}


def test_strict_json():
    out = strict_json({"a": [np.float32(1.5), math.inf, np.int64(3)], "b": np.array([1.0, np.nan])})
    assert out == {"a": [1.5, None, 3], "b": [1.0, None]}


def test_write_report(tmp_path):
    d = tmp_path / "reports" / "e"
    digest, files = write_report(d, _report(), _images())
    assert sorted(p.name for p in d.iterdir()) == ["panel.png", "report.json", "summary.md"]
    assert digest == sha256_file(files["json"])
    data = json.loads(files["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert data["summary"]["parity_psnr"]["min"] is None and data["nan"] is None
    assert data["files_sha256"]["panel"] == sha256_file(files["panel"])
    assert files["panel"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FAIL" in files["summary"].read_text()

    with pytest.raises(OutputExistsError):
        write_report(d, _report(), _images())
    report = _report() | {"verdict": "pass"}
    write_report(d, report, None, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == ["report.json", "summary.md"]
    assert json.loads((d / "report.json").read_text())["verdict"] == "pass"
    assert [p.name for p in d.parent.iterdir()] == ["e"]  # no temporary folders left behind
