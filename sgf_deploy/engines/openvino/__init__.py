"""OpenVINO backend: the engine is an OpenVINO IR (``.xml`` + ``.bin`` beside it) converted from
the exported ONNX after its model-local functions (``sgf::MCNS``) were inlined; INT8 engines are
quantised with NNCF (:mod:`sgf_deploy.calibration.nncf_int8`)."""
