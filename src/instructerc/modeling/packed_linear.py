"""Linear layers with their weights laid out once for oneDNN, for bf16 inference on a CPU.

PyTorch's bf16 ``linear`` on a CPU re-lays the weight into oneDNN's blocked format on every call.
With few tokens per call (a live conversation's next utterance: 15-20 tokens) that copy is most
of the cost: a 576 x 1,536 layer of the default model took 187 us per call at 17 tokens and 71 us
with the weight laid out once (153 and 71 us at 1 token, 2,421 and 1,338 us at 1,024), with
identical outputs. This is the layout ``torch.compile``'s CPU freezing uses, without compiling.

Only for inference: packed weights take no gradients. float32 is left alone (MKL's sgemm reads
the plain layout directly and was no faster packed), and so is any build of PyTorch without the
oneDNN operators (the model then runs unchanged).
"""

from __future__ import annotations

from typing import Any


def packing_available() -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _packed_linear_class() -> Any:
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` for inference, its weight in oneDNN's layout."""

        def __init__(self, linear: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.dtype = linear.weight.dtype
            weight = linear.weight.detach()
            self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, None), persistent=False)
            bias = None if linear.bias is None else linear.bias.detach()
            self.register_buffer("bias", bias, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dtype != self.dtype:  # what autocast would have done
                x = x.to(self.dtype)
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, packed {self.dtype}"

    return PackedLinear


def pack_linear_layers(model: Any) -> int:
    """Replace the model's bf16 ``nn.Linear`` layers on the CPU with packed ones, in place;
    returns how many were packed (0 where the model is not bf16 on a CPU or oneDNN lacks the
    operators). The model must not be trained afterwards."""
    import torch

    if not packing_available():
        return 0
    packed_class = _packed_linear_class()
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16 and child.weight.device.type == "cpu"
    ]
    for parent, name, child in targets:
        setattr(parent, name, packed_class(child))
    return len(targets)
