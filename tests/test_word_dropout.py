"""LoRA dropout from 15-bit slices of random words: the same distribution and expectation as
``nn.Dropout``, installed only in the adapters, and nothing changes outside training."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from instructerc.modeling.word_dropout import LEVELS, _word_dropout_class, use_word_dropout  # noqa: E402


def _dropout(p: float):
    module = _word_dropout_class()(p)
    module.train()
    return module


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_drop_rate_and_expectation_match_the_rounded_p(p):
    torch.manual_seed(0)
    module = _dropout(p)
    rounded = module.threshold / LEVELS
    assert abs(rounded - p) <= 0.5 / LEVELS
    out = module(torch.ones(2000, 1000))
    dropped = out == 0
    sigma = math.sqrt(rounded * (1 - rounded) / dropped.numel())
    assert abs(float(dropped.float().mean()) - rounded) < 5 * sigma
    # Both halves of every random word are uniform: even and odd elements drop alike.
    for half in (dropped[:, ::2], dropped[:, 1::2]):
        assert abs(float(half.float().mean()) - rounded) < 5 * sigma * math.sqrt(2)
    kept = out[~dropped]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - rounded)))
    assert abs(float(out.mean()) - 1) < 5 * sigma / (1 - rounded)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    module = _dropout(0.2)
    x = torch.ones(64, 33, requires_grad=True)  # an odd element count: the last word is half used
    out = module(x)
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())


def test_seeded_masks_repeat_and_odd_shapes_and_bf16_work():
    module = _dropout(0.05)
    x = torch.randn(3, 7, 5, dtype=torch.bfloat16)
    torch.manual_seed(7)
    first = module(x)
    torch.manual_seed(7)
    assert torch.equal(first, module(x))
    assert first.dtype == torch.bfloat16 and first.shape == x.shape
    transposed = x.transpose(0, 2)  # not contiguous
    assert module(transposed).shape == transposed.shape


def test_identity_outside_training_and_at_zero():
    x = torch.randn(10, 10)
    module = _dropout(0.5)
    module.eval()
    assert torch.equal(module(x), x)
    assert torch.equal(_dropout(0.0)(x), x)


def test_make_trainable_installs_it_in_the_adapters_only(tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from tests.tiny import tiny_backbone

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm
    from instructerc.modeling.finetune import make_trainable
    from instructerc.training.config import LoraConfig

    backbone = tiny_backbone(tmp_path / "backbone")
    ids = torch.arange(5, 25)[None]

    def adapter_dropouts(model):
        holders = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
        return [d for m in holders for d in m.lora_dropout.values()]

    plain = get_peft_model(
        load_causal_lm(str(backbone), BackboneConfig(model=str(backbone))),
        PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    plain.eval()
    with torch.no_grad():
        before = plain(input_ids=ids).logits
    assert use_word_dropout(plain) == len(adapter_dropouts(plain)) > 0
    assert use_word_dropout(plain) == 0  # already replaced
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, before)

    model = make_trainable(load_causal_lm(str(backbone), BackboneConfig(model=str(backbone))), "lora", LoraConfig(dropout=0.1))
    assert {type(d).__name__ for d in adapter_dropouts(model)} == {"WordDropout"}
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
