"""Fused Triton kernels for the MRU gating (installed as ``s2i_fast.kernels``).

Every op is one public function with an ``impl`` switch ("ref" | "triton"); the plain-torch
``_name_ref`` beside it is the specification and is what ONNX export traces.
"""

from s2i_fast.kernels.mru_ops import gate_mask, gated_combine, norm_act

__all__ = ["gate_mask", "gated_combine", "norm_act"]
