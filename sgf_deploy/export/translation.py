"""The exporter's translation of ``torch.ops.sgf.mcns``: one opaque ``sgf.MCNS`` node.

torch 2.13's dynamo exporter needs an onnxscript function in the ``sgf`` opset with type
annotations on its inputs and return (DESIGN.md section 3); onnxscript resolves the annotations
in this module's globals, hence a module of its own. The function must not be named ``MCNS``: a
script function ``sgf::MCNS`` that calls ``sgf.MCNS`` is a cyclic function and the exporter's
inliner refuses it. Its body is a single call of the (not yet defined) ``sgf.MCNS``, which the
exporter inlines, leaving the opaque node; the FunctionProto that defines ``sgf::MCNS`` in
standard ops is attached afterwards (:mod:`sgf_deploy.export.mcns_function`).
"""

import onnxscript
from onnxscript import FLOAT

from .mcns_function import DOMAIN, FUNCTION_VERSION

sgf = onnxscript.values.Opset(DOMAIN, FUNCTION_VERSION)


@onnxscript.script(sgf)
def sgf_mcns_node(feat_tar: FLOAT, feat_ref: FLOAT, sal_tar: FLOAT, sal_ref: FLOAT, groups: int, eps: float) -> FLOAT:
    return sgf.MCNS(feat_tar, feat_ref, sal_tar, sal_ref, groups=groups, eps=eps)
