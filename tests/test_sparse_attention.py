"""Block-sparse attention computes what SDPA computes, over fewer pairs, and only where that pays."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations import sdpa_attention

from instructerc.modeling import sparse_attention
from instructerc.modeling.packing import pack, row_tensors


class Attention(torch.nn.Module):
    """What the attention function reads from its module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def tree_mask(prefix: int = 0) -> torch.Tensor:
    """The mask of one packed row: a shared trunk and many private branches (the paper's template's shape)."""
    generator = torch.Generator().manual_seed(0)
    trunk = torch.randint(3, 50, (40,), generator=generator).tolist()
    sequences = [trunk[: 10 + 3 * k] + torch.randint(50, 99, (30,), generator=generator).tolist() for k in range(10)]
    ((row, _),) = pack(sequences, 2048, groups=[0] * len(sequences))
    _, _, mask = row_tensors([row], 0)
    return torch.cat([torch.ones(mask.shape[:3] + (prefix,), dtype=torch.bool), mask], dim=-1)


def qkv(mask: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    rows, _, queries, keys = mask.shape
    query = torch.randn(rows, 2 * groups, queries, 16, generator=generator)
    return query, torch.randn(rows, 2, keys, 16, generator=generator), torch.randn(rows, 2, keys, 16, generator=generator)


@pytest.fixture
def fallbacks(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = sdpa_attention.sdpa_attention_forward
    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_each_query_block_gathers_exactly_the_keys_it_may_see():
    mask = tree_mask(prefix=5)
    blocks, work = sparse_attention.attention_plan(mask, block=32)
    queries, keys = mask.shape[2:]
    assert [(b.start, b.end) for b in blocks] == [(s, min(queries, s + 32)) for s in range(0, queries, 32)]
    for block in blocks:
        visible = mask[0, 0, block.start : block.end]
        assert block.keys.tolist() == visible.any(0).nonzero().squeeze(1).tolist()
        assert torch.equal(block.mask[0, 0], visible[:, block.keys])
    assert work == sum((b.end - b.start) * len(b.keys) for b in blocks) / (queries * keys)
    assert work < 0.5  # the branches do not see each other


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("prefix", [0, 7])
def test_block_sparse_attention_equals_sdpa_on_a_packed_row(groups, prefix, fallbacks):
    mask = tree_mask(prefix)
    assert mask.shape[2] >= 2 * sparse_attention.BLOCK
    query, key, value = qkv(mask, groups)
    module = Attention(groups)
    sparse, _ = sparse_attention.block_sparse_attention(module, query, key, value, mask, scaling=0.25)
    assert not fallbacks  # the blocks ran, not SDPA
    dense, _ = sdpa_attention.sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert sparse.shape == dense.shape == (1, mask.shape[2], 2 * groups, 16)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["dense mask", "no mask", "short", "float mask"])
def test_anything_else_goes_to_sdpa_unchanged(case, fallbacks):
    mask = tree_mask()
    if case == "dense mask":  # nothing to skip: the blocks would only add calls
        mask = torch.ones_like(mask)
    elif case == "no mask":
        mask = None
    elif case == "short":
        mask = mask[:, :, :100, :100]
    query, key, value = qkv(mask if mask is not None else tree_mask(), 3)
    if case == "float mask":
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    out, _ = sparse_attention.block_sparse_attention(Attention(3), query, key, value, mask, scaling=0.25)
    assert fallbacks == [1]
    expected, _ = sdpa_attention.sdpa_attention_forward(Attention(3), query, key, value, mask, scaling=0.25)
    torch.testing.assert_close(out, expected)


def test_the_predictor_uses_it_on_cpu_and_scores_as_sdpa_does(tmp_path_factory, monkeypatch):
    from instructerc.inference.predictor import InferenceConfig, Predictor
    from instructerc.labels.benchmarks import MELD
    from instructerc.modeling.wrappers import underlying_model
    from instructerc.prompts.templates import TemplateConfig
    from test_inference import dialogue
    from tiny import tiny_model_dir

    directory = tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, TemplateConfig(name="instructerc", demonstration=False, window=3))
    plans: list[float] = []
    original = sparse_attention.attention_plan
    monkeypatch.setattr(sparse_attention, "attention_plan", lambda mask, *a: plans.append(original(mask, *a)[1]) or original(mask, *a))
    dialogues = [dialogue(9), dialogue(7, "e")]
    results = {}
    for sparse in (True, False):
        predictor = Predictor.from_directory(directory, config=InferenceConfig(block_sparse_attention=sparse))
        implementation = underlying_model(predictor.model).config._attn_implementation
        assert implementation == (sparse_attention.NAME if sparse else "sdpa")
        results[sparse] = [p for ps in predictor.predict(dialogues) for p in ps]
    assert plans and min(plans) < sparse_attention.MAX_WORK  # some pass did run in blocks
    for a, b in zip(results[True], results[False]):
        assert a.label == b.label
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    assert InferenceConfig().sparse_attention("cpu") and not InferenceConfig().sparse_attention("cuda:0")
