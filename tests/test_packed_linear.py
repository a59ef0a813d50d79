"""bf16 linear layers with weights laid out once for oneDNN: the same outputs as nn.Linear."""

from __future__ import annotations

import torch

from instructerc.modeling.packed_linear import pack_linear_layers, packing_available
from tiny import tiny_backbone


def test_a_packed_bf16_model_computes_what_it_computed_before(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone(tmp_path / "model", layers=2), dtype=torch.bfloat16).eval()
    ids = torch.arange(3, 40).reshape(1, -1)
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        count = pack_linear_layers(model)
        after = model(input_ids=ids).logits
    # 7 projections per layer and the output head; none left when packing is available
    assert count == (2 * 7 + 1 if packing_available() else 0)
    assert sum(type(m) is torch.nn.Linear for m in model.modules()) == (0 if packing_available() else 2 * 7 + 1)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_float32_layers_are_left_alone(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_backbone(tmp_path / "model", layers=1), dtype=torch.float32)
    assert pack_linear_layers(model) == 0
    assert sum(type(m) is torch.nn.Linear for m in model.modules()) == 1 * 7 + 1
