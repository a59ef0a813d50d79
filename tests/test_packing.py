"""Prefix-tree packing: the layout and the attention mask are exactly each sequence's own causal view."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from instructerc.modeling.packing import pack, row_tensors


def reference_mask(parents: list[int], length: int) -> np.ndarray:
    """Token i sees its ancestors and itself, found by walking parents; padding sees itself."""
    allowed = np.zeros((length, length), dtype=bool)
    for i in range(length):
        allowed[i, i] = True
        j = parents[i] if i < len(parents) else -1
        while j >= 0:
            allowed[i, j] = True
            j = parents[j]
    return allowed


def random_sequences(seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    stem = [rng.randrange(50) for _ in range(30)]
    return [stem[: rng.randint(0, 30)] + [rng.randrange(50, 90) for _ in range(rng.randint(1, 12))] for _ in range(25)]


def test_the_mask_lets_each_token_see_exactly_its_ancestors():
    for seed in range(5):
        packed = pack(random_sequences(seed), max_tokens=120)
        rows = [row for row, _ in packed]
        _, positions, mask = row_tensors(rows, pad_id=0)
        for b, row in enumerate(rows):
            assert np.array_equal(mask[b, 0].numpy(), reference_mask(row.parents, mask.shape[-1]))
            assert positions[b, : len(row)].tolist() == row.depths


def test_every_sequence_is_recovered_from_its_row_and_shared_prefixes_are_stored_once():
    sequences = random_sequences(7)
    packed = pack(sequences, max_tokens=10_000)
    assert len(packed) == 1
    row, members = packed[0]
    assert len(row) < sum(len(s) for s in sequences)
    for ends, member in zip(row.ends, members):
        assert [row.tokens[i] for i in ends] == sequences[member]
        assert [row.depths[i] for i in ends] == list(range(len(sequences[member])))


def test_rows_respect_max_tokens_and_keep_the_input_order():
    sequences = random_sequences(3)
    packed = pack(sequences, max_tokens=60)
    assert all(len(row) <= 60 or len(members) == 1 for row, members in packed)
    assert [m for _, members in packed for m in members] == list(range(len(sequences)))
    unshared = pack(sequences, max_tokens=60, shared_prefix=False)
    assert all(len(members) == 1 for _, members in unshared)


def test_identical_sequences_each_keep_their_own_entry():
    packed = pack([[1, 2, 3], [1, 2, 3], [1, 2]], max_tokens=100)
    row, members = packed[0]
    assert len(row) == 3 and members == [0, 1, 2]
    assert row.ends[0] == row.ends[1] == [0, 1, 2] and row.ends[2] == [0, 1]
    assert torch.is_tensor(row_tensors([row], 0)[2])


def test_sdpa_and_eager_attention_agree_on_packed_rows(tmp_path):
    """The boolean mask goes to SDPA as is and to eager attention as an additive mask."""
    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm
    from instructerc.modeling.forward import kept_logits
    from tiny import tiny_backbone

    path = str(tiny_backbone(tmp_path / "backbone"))
    rows = [row for row, _ in pack(random_sequences(11), max_tokens=80)]
    ids, positions, mask = row_tensors(rows, pad_id=0)
    keep = torch.arange(ids.shape[1])
    outputs = []
    for implementation in ("sdpa", "eager"):
        model = load_causal_lm(path, BackboneConfig(model=path, attn_implementation=implementation)).eval()
        with torch.no_grad():
            outputs.append(kept_logits(model, ids, mask, positions, keep))
    real = torch.zeros(ids.shape, dtype=torch.bool)
    for b, row in enumerate(rows):
        real[b, : len(row)] = True
    torch.testing.assert_close(outputs[0][real], outputs[1][real], atol=1e-5, rtol=1e-5)


def test_wrapped_models_still_skip_the_vocabulary_projection(tmp_path):
    """DDP hides the model's forward signature behind (*inputs, **kwargs); the check must look inside."""
    from peft import LoraConfig, get_peft_model

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm
    from instructerc.modeling.forward import accepts_logits_to_keep
    from instructerc.modeling.wrappers import underlying_model
    from tiny import tiny_backbone

    path = str(tiny_backbone(tmp_path / "backbone"))
    model = get_peft_model(load_causal_lm(path, BackboneConfig(model=path)), LoraConfig(r=2, target_modules=["q_proj"]))

    class Wrapper(torch.nn.Module):  # the shape of DistributedDataParallel: .module, forward(*inputs, **kwargs)
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *inputs, **kwargs):
            return self.module(*inputs, **kwargs)

    wrapped = Wrapper(model)
    assert underlying_model(wrapped) is model.get_base_model()
    assert accepts_logits_to_keep(wrapped)


def _encoded(dialogue_sizes: dict[str, int]):
    from types import SimpleNamespace

    return [
        SimpleNamespace(example=SimpleNamespace(dataset="d", dialogue_id=name, index=i))
        for name, size in dialogue_sizes.items()
        for i in range(size)
    ]


def test_epoch_order_keeps_dialogues_whole_or_in_chunks():
    from instructerc.training.batches import epoch_order

    examples = _encoded({"long": 20, "a": 3, "b": 5, "c": 2})
    whole = epoch_order(examples, seed=3, by_dialogue=True)
    names = [examples[i].example.dialogue_id for i in whole]
    assert sorted(whole) == list(range(len(examples)))
    assert sum(1 for x, y in zip(names, names[1:]) if x != y) == 3  # each dialogue one run

    chunked = epoch_order(examples, seed=3, by_dialogue=True, chunk=4)
    assert sorted(chunked) == list(range(len(examples)))
    runs, start = [], 0
    for end in range(1, len(chunked) + 1):
        if (
            end == len(chunked)
            or examples[chunked[end]].example.dialogue_id != examples[chunked[start]].example.dialogue_id
            or end - start == 4
        ):
            runs.append(chunked[start:end])
            start = end
    for run in runs:  # consecutive utterances of one dialogue, at most 4
        indices = [examples[i].example.index for i in run]
        assert indices == list(range(indices[0], indices[0] + len(run))) and len(run) <= 4
    long_positions = [p for p, i in enumerate(chunked) if examples[i].example.dialogue_id == "long"]
    assert long_positions != list(range(long_positions[0], long_positions[0] + 20))  # the long scene is spread out
    assert chunked == epoch_order(examples, seed=3, by_dialogue=True, chunk=4)


def test_groups_start_a_new_row_when_the_group_changes():
    sequences = [[1, 2, 3], [1, 2, 4], [1, 2, 5], [1, 2, 6]]
    rows = pack(sequences, max_tokens=100, groups=["a", "a", "b", "b"])
    assert [members for _, members in rows] == [[0, 1], [2, 3]]
    assert [len(row) for row, _ in rows] == [4, 4]
    assert [members for _, members in pack(sequences, max_tokens=100)] == [[0, 1, 2, 3]]


def _tiny(family: str):
    from transformers import GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    if family == "granite":  # divides its logits by logits_scaling inside forward
        return GraniteForCausalLM(GraniteConfig(logits_scaling=4.0, **shape)).eval()
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


@pytest.mark.parametrize(("family", "plain"), [("llama", True), ("granite", False)])
def test_the_direct_head_is_used_only_where_it_reproduces_the_model(family, plain):
    from instructerc.modeling.forward import head_is_plain, kept_logits, pair_logits

    model = _tiny(family)
    assert head_is_plain(model) is plain
    rows = [[5, 6, 7, 8, 9], [11, 12, 13, 0, 0]]
    ids = torch.tensor(rows)
    positions = torch.arange(5).expand(2, 5)
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5).clone()
    pick_rows, pick_columns = torch.tensor([0, 1, 0]), torch.tensor([4, 2, 1])
    with torch.inference_mode():
        full = kept_logits(model, ids, mask, positions, torch.arange(5))
        got = pair_logits(model, ids, mask, positions, pick_rows, pick_columns, direct_head=plain)
    assert torch.allclose(got, full[pick_rows, pick_columns], atol=1e-5)
