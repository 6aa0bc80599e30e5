"""TensorRT plugins of sgf-deploy (Python IPluginV3; no torch).

``register_mcns_plugin(trt) -> creator`` registers ``sgf::MCNS`` v1 with the given ``tensorrt`` /
``tensorrt_rtx`` module; ``mark_mcns_nodes_for_plugin(model_proto) -> int`` sets
``plugin_namespace="sgf"`` on the ``sgf.MCNS`` nodes so the ONNX parser picks the plugin over the
model-local function. See :mod:`sgf_deploy.engines.plugins.mcns_plugin`.
"""

from sgf_deploy.engines.plugins.mcns_plugin import (
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    mark_mcns_nodes_for_plugin,
    register_mcns_plugin,
)

__all__ = [
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "mark_mcns_nodes_for_plugin",
    "register_mcns_plugin",
]
