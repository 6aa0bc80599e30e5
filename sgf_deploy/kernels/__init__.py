"""Fused GPU kernels: the ``sgf::MCNS`` forward in CUDA (``mcns.cu``), compiled at run time.

- :mod:`sgf_deploy.kernels.nvrtc` -- NVRTC compilation and driver-API launch (numpy + cuda-python;
  no torch, no tensorrt), shared by the PyTorch op and the TensorRT plugin.
- :mod:`sgf_deploy.kernels.torch_cuda` -- ``register_cuda_kernel(op, reference, check)``: the
  kernel as the CUDA forward of ``torch.ops.sgf.mcns`` (imports torch). The model side calls it
  (``sgf_deploy.model.mcns``); nothing here imports :mod:`sgf_deploy.model`.
- :mod:`sgf_deploy.kernels.emulate` -- a numpy transliteration of the kernel's loops, the CPU check
  of its index arithmetic.

Importing this package imports nothing heavy.
"""
