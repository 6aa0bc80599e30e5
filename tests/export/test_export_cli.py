"""`sgf-deploy export` through click: the success path, the default output name, and the error
paths (one line on stderr, non-zero exit, nothing written or overwritten)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner

from sgf_deploy.cli import cli


def _invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def _one_line_error(result, *needles):
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("sgf-deploy: error: ")]
    # progress lines may precede it; the error itself is exactly one line, the last
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output


def test_static_export_to_default_name(lite_ckpt, tmp_path, monkeypatch):
    from sgf_deploy.artifacts import sha256_file

    monkeypatch.chdir(tmp_path)
    result = _invoke("--ckpt", lite_ckpt, "--static", "32x48", "--batch", "2")
    assert result.exit_code == 0, result.output
    expected = tmp_path / "export" / f"sgf_mri-lite-recon4x-t1-t2-{sha256_file(lite_ckpt)[:8]}.onnx"
    assert expected.is_file() and expected.with_suffix(".json").is_file()
    assert result.stdout.strip() == str(expected.relative_to(tmp_path))
    assert "self-check 2x1x32x48" in result.stderr and "PSNR" in result.stderr
    model = onnx.load(str(expected))
    for value in list(model.graph.input) + list(model.graph.output):
        assert [d.dim_value for d in value.type.tensor_type.shape.dim] == [2, 1, 32, 48]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["sgf.dynamic"] == "static"
    side = json.loads(expected.with_suffix(".json").read_text())
    assert [c["shape"] for c in side["selfcheck"]["cases"]] == [[2, 1, 32, 48]]
    # the same again without --force is refused, and both files are left as they were
    before = expected.read_bytes(), expected.with_suffix(".json").read_bytes()
    again = _invoke("--ckpt", lite_ckpt, "--static", "32x48", "--batch", "2")
    _one_line_error(again, "already exists", "--force")
    assert (expected.read_bytes(), expected.with_suffix(".json").read_bytes()) == before


def test_existing_output_untouched(lite_ckpt, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"precious bytes")
    _one_line_error(_invoke("--ckpt", lite_ckpt, "--out", out), str(out), "already exists")
    assert out.read_bytes() == b"precious bytes"
    assert not out.with_suffix(".json").exists()
    # an existing sidecar is protected as well
    out2 = tmp_path / "other.onnx"
    out2.with_suffix(".json").write_text("{}")
    _one_line_error(_invoke("--ckpt", lite_ckpt, "--out", out2), "other.json", "already exists")
    assert not out2.exists() and out2.with_suffix(".json").read_text() == "{}"


def test_missing_checkpoint(tmp_path):
    _one_line_error(_invoke("--ckpt", tmp_path / "nope.pt", "--out", tmp_path / "x.onnx"), "nope.pt", "not found")
    assert not list(tmp_path.iterdir())


def test_corrupt_checkpoint(lite_ckpt, tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(lite_ckpt.read_bytes()[:5000])
    _one_line_error(_invoke("--ckpt", bad, "--out", tmp_path / "x.onnx"), "truncated.pt")
    assert not (tmp_path / "x.onnx").exists()


def test_unknown_architecture(lite_ckpt, tmp_path):
    blob = torch.load(lite_ckpt, weights_only=True)
    blob["config"] = dict(blob["config"], transformer_layers=12)
    odd = tmp_path / "odd.pt"
    torch.save(blob, odd)
    _one_line_error(_invoke("--ckpt", odd, "--out", tmp_path / "x.onnx"), "odd.pt", "unknown architecture")
    blob = torch.load(lite_ckpt, weights_only=True)
    blob["config"] = dict(blob["config"], channels=[8, 16, 24, 32])  # weights no longer fit
    odd2 = tmp_path / "odd2.pt"
    torch.save(blob, odd2)
    _one_line_error(_invoke("--ckpt", odd2, "--out", tmp_path / "x.onnx"), "odd2.pt", "do not match")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--static", "100x64"], "multiples of 8"),
        (["--static", "64"], "HxW"),
        (["--opset", "17"], "opset"),
    ],
)
def test_bad_arguments(lite_ckpt, tmp_path, args, needle):
    _one_line_error(_invoke("--ckpt", lite_ckpt, "--out", tmp_path / "x.onnx", *args), needle)
    assert not list(p for p in tmp_path.iterdir())


def test_out_must_be_onnx(lite_ckpt, tmp_path):
    _one_line_error(_invoke("--ckpt", lite_ckpt, "--out", tmp_path / "x.json"), ".onnx")


def test_selfcheck_failure_leaves_nothing(lite_ckpt, tmp_path, monkeypatch):
    from sgf_deploy.export import selfcheck

    monkeypatch.setattr(selfcheck, "MAX_ABS_ERROR", -1.0)  # no real export can meet it
    out = tmp_path / "fails.onnx"
    result = _invoke("--ckpt", lite_ckpt, "--out", out, "--static", "16x16", "--batch", "1")
    _one_line_error(result, "self-check failed", "nothing was written")
    assert result.exit_code == 3
    assert list(tmp_path.iterdir()) == []  # neither the file, its sidecar, nor a temp file


def test_selfcheck_catches_a_wrong_function(lite_ckpt, tmp_path, monkeypatch):
    """A subtly wrong sgf::MCNS body (zero padding NOT counted in the 3x3 variance window) fails
    the export, even though in an untrained network it barely moves the output."""
    from sgf_deploy.export import mcns_function, onnx_export

    real = mcns_function.make_mcns_function

    def wrong(opset):
        fn = real(opset)
        for node in fn.node:
            for attr in node.attribute:
                if node.op_type == "AveragePool" and attr.name == "count_include_pad":
                    attr.i = 0
        return fn

    monkeypatch.setattr(onnx_export, "make_mcns_function", wrong)
    out = tmp_path / "wrong.onnx"
    result = _invoke("--ckpt", lite_ckpt, "--out", out, "--static", "32x32", "--batch", "1")
    _one_line_error(result, "self-check failed", "sgf::MCNS function alone")
    assert list(tmp_path.iterdir()) == []
