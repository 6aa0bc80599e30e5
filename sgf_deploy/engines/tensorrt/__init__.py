"""TensorRT and TensorRT-RTX backend (one builder and one runner serve both; the Python module,
``tensorrt`` or ``tensorrt_rtx``, is picked by backend name)."""
