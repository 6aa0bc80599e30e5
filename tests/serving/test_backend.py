"""The Python-backend models outside Triton, with a stand-in for ``triton_python_backend_utils``
(the module exists only inside Triton's stub): the native layout's pre -> engine -> post chain
gives what the contract gives (it cannot run on the bundled server), and SliceModel checks the
repository's hashes and the trust rule when it loads."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import make_engine, pair

from sgf_deploy import contract
from sgf_deploy.serving.backend import PostModel, PreModel, SliceModel
from sgf_deploy.serving.repository import TritonExportSettings, export_repository


class FakeTensor:
    def __init__(self, name: str, array) -> None:
        self.name, self.array = name, np.asarray(array)

    @classmethod
    def from_dlpack(cls, name: str, obj) -> "FakeTensor":
        return cls(name, np.from_dlpack(obj).copy())

    def as_numpy(self) -> np.ndarray:
        return self.array

    def __dlpack__(self, *args, **kwargs):
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class FakeError(Exception):
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message: str, code=None) -> None:
        super().__init__(message)
        self.code = code


class FakeResponse:
    def __init__(self, output_tensors, error=None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


@pytest.fixture()
def pb_utils(monkeypatch):
    module = types.SimpleNamespace(
        Tensor=FakeTensor, TritonError=FakeError, InferenceResponse=FakeResponse,
        get_input_tensor_by_name=lambda request, name: request.get(name))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def args_for(repo: Path, model: str) -> dict:
    """What Triton passes to ``initialize``: the config as JSON (parameters as a map)."""
    from google.protobuf import json_format, text_format

    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
            "model_repository": str(repo / model), "model_version": "1"}


def request(**arrays) -> dict:
    return {name: FakeTensor(name, array) for name, array in arrays.items()}


def test_native_pre_engine_post_equals_the_contract(pb_utils, tmp_path):
    from sgf_deploy.engines import load_engine

    engine = make_engine(tmp_path / "e")
    repo = export_repository(engine, tmp_path / "repo", TritonExportSettings(layout="native")).path
    pre, post = PreModel(), PostModel()
    pre.initialize(args_for(repo, "sgf_mri_pre"))
    post.initialize(args_for(repo, "sgf_mri_post"))
    runner = load_engine(repo / "sgf_mri_engine" / "1" / "model.onnx")  # what onnxruntime_onnx would run
    ref, tar = pair(3, 37, 45)
    bad = tar.copy()
    bad[0, 0, 0] = np.inf
    first = pre.execute([request(reference=ref, target=tar), request(reference=ref, target=bad)])
    assert first[1].error is not None and "non-finite" in str(first[1].error)
    outputs = first[0].outputs
    assert outputs["reference_n"].shape == (3, 1, 40, 48) and outputs["stats"].dtype == np.float64
    prediction = runner.infer(outputs["reference_n"], outputs["target_n"])
    final = post.execute([request(prediction=prediction, stats=outputs["stats"], size=outputs["size"])])
    expected = contract.reconstruct(runner.infer, ref, tar, 8, 4)
    assert final[0].error is None and np.array_equal(final[0].outputs["reconstruction"], expected)


def test_slice_model_checks_hashes_and_trust_when_it_loads(pb_utils, tmp_path):
    from sgf_deploy.errors import EngineMismatchError, ValidationFailed

    repo = export_repository(make_engine(tmp_path / "e"), tmp_path / "repo").path
    model = SliceModel()
    model.initialize(args_for(repo, "sgf_mri"))
    ref, tar = pair(2, 24, 24)
    [ok, bad] = model.execute([request(reference=ref, target=tar), request(reference=ref)])
    assert ok.error is None and ok.outputs["reconstruction"].shape == (2, 24, 24)
    assert bad.error.code == "INVALID_ARG" and "lacks the input 'target'" in str(bad.error)
    model.finalize()
    # a repository exported with --allow-unvalidated whose parameter was edited to refuse it
    unvalidated = export_repository(make_engine(tmp_path / "u", validated=False), tmp_path / "repo-u",
                                    TritonExportSettings(allow_unvalidated=True)).path
    args = args_for(unvalidated, "sgf_mri")
    config = json.loads(args["model_config"])
    config["parameters"]["allow_unvalidated"]["string_value"] = "false"
    with pytest.raises(ValidationFailed, match="refused: never validated"):
        SliceModel().initialize(dict(args, model_config=json.dumps(config)))
    engine_file = next((repo / "sgf_mri" / "1").glob("*.dyn.onnx"))
    engine_file.write_bytes(engine_file.read_bytes() + b"\0")
    with pytest.raises(EngineMismatchError, match="does not match hashes.json"):
        SliceModel().initialize(args_for(repo, "sgf_mri"))
