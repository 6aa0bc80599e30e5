"""ONNX Runtime backend: the engine is the precision-converted model after ONNX Runtime's graph
optimisation, saved with ``SessionOptions.optimized_model_filepath``."""
