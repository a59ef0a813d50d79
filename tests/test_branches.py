"""Two-pass scoring (trunks, then branches against their cache) is exact and is used where it pays."""

from __future__ import annotations

import pytest
import torch

from instructerc.inference import batched, branches
from instructerc.modeling.packing import pack


def test_a_row_splits_into_its_shared_trunk_and_private_branches():
    sequences = [[1, 2, 3, 10, 11], [1, 2, 3, 4, 20, 21, 22], [1, 2, 3, 4], [1, 2, 3, 4, 5, 30]]
    ((row, members),) = pack(sequences, 100, groups=[0, 0, 0, 0])
    split = branches.split_rows([row], [members])
    (trunk,) = split.trunks
    # 1 2 3 are on four paths, 4 on three; 5 only on the last, so it belongs to that branch.
    assert trunk.tokens == [1, 2, 3, 4] and trunk.parents == [-1, 0, 1, 2] and trunk.depths == [0, 1, 2, 3]
    assert split.trunk_ends == [(0, 3, 2)]  # sequence 2 ends inside the trunk, at token 4
    by_sequence = {b.sequence: b for b in split.branches}
    assert set(by_sequence) == {0, 1, 3}
    assert (by_sequence[0].tokens, by_sequence[0].depths, by_sequence[0].attach) == ([10, 11], [3, 4], 2)
    assert (by_sequence[1].tokens, by_sequence[1].attach) == ([20, 21, 22], 3)
    assert (by_sequence[3].tokens, by_sequence[3].depths) == ([5, 30], [4, 5])


def test_nested_prompts_are_not_split_and_long_branches_are():
    nested = [list(range(1, n)) for n in range(20, 60, 5)]  # each a prefix of the next
    ((row, members),) = pack(nested, 1000, groups=[0] * len(nested))
    split = branches.split_rows([row], [members])
    assert not branches.worth_splitting([row], split, prefix=0)
    bushy = [list(range(1, 11)) + [100 + k] * 40 for k in range(8)]  # a short trunk, long branches
    ((row, members),) = pack(bushy, 1000, groups=[0] * len(bushy))
    split = branches.split_rows([row], [members])
    assert branches.worth_splitting([row], split, prefix=0)


def test_chunks_respect_the_token_budget_and_keep_every_branch():
    items = [branches.Branch(k, 0, -1, [1] * length, list(range(length))) for k, length in enumerate([5, 30, 12, 7, 30, 2])]
    chunks = branches.branch_chunks(items, context=10, batch_tokens=40)
    assert sorted(b.sequence for c in chunks for b in c) == list(range(6))
    for chunk in chunks:
        width = max(len(b.tokens) for b in chunk)
        assert len(chunk) == 1 or len(chunk) * width <= 40


@pytest.mark.parametrize("batch_tokens", [4096, 64])
@pytest.mark.parametrize("common_prefix", [True, False])
def test_two_pass_scoring_matches_scoring_each_sequence_alone(batch_tokens, common_prefix, tmp_path_factory, monkeypatch):
    from instructerc.inference.predictor import Predictor
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.templates import TemplateConfig
    from test_inference import dialogue
    from tiny import tiny_model_dir

    template = TemplateConfig(name="instructerc", demonstration=False, window=3)
    predictor = Predictor.from_directory(tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, template))
    items = [(d, i) for d in (dialogue(6), dialogue(4, "e")) for i in range(len(d))]
    sequences = [e.prompt_ids for e in predictor.encoded_prompts(items)]
    if not common_prefix:  # no prefix shared by all: the trunk pass starts from an empty cache
        sequences = [[7 + k % 2, *s] for k, s in enumerate(sequences)]
        assert batched.shared_prefix_length(sequences) == 0
    passes = []
    monkeypatch.setattr(batched, "split_pass", lambda *a, **k: passes.append("split") or branches.split_pass(*a, **k))
    monkeypatch.setattr(branches, "WORTH_SPLITTING", 10.0)  # split every batch that has branches
    pad = predictor.tokenizer.pad_token_id
    groups = [d.id for d, _ in items]
    two_pass = batched.last_token_logits(predictor.model, sequences, pad, 2048, batch_tokens, groups=groups, split_branches=True)
    assert passes
    for sequence, logits in zip(sequences, two_pass):
        alone = batched.last_token_logits(predictor.model, [sequence], pad, 2048, 4096)[0]
        torch.testing.assert_close(logits, alone, atol=1e-4, rtol=1e-4)
    one_pass = batched.last_token_logits(predictor.model, sequences, pad, 2048, batch_tokens, groups=groups)
    for a, b in zip(two_pass, one_pass):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
