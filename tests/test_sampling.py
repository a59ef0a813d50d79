"""Choosing training dialogues: stratified, reproducible, per-dataset shares."""

from __future__ import annotations

from collections import Counter

import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.sampling import stratified_fraction
from instructerc.errors import InputError
from instructerc.training.config import DataConfig


def corpus() -> list[Dialogue]:
    dialogues = []
    for dataset, count in (("meld", 40), ("iemocap", 20)):
        for k in range(count):
            emotion = ("joy", "anger")[k % 2]
            dialogues.append(Dialogue(f"{dataset}-{k}", dataset, "train", (Utterance("A", "hi", emotion), Utterance("B", "yo", emotion))))
    return dialogues


def test_one_fraction_keeps_each_stratum_share_in_input_order():
    chosen = stratified_fraction(corpus(), 0.25, seed=3)
    assert Counter((d.dataset, d.utterances[0].emotion) for d in chosen) == {
        ("meld", "joy"): 5,
        ("meld", "anger"): 5,
        ("iemocap", "joy"): 2,
        ("iemocap", "anger"): 2,
    }
    order = [d.id for d in corpus()]
    assert [d.id for d in chosen] == sorted((d.id for d in chosen), key=order.index)
    assert chosen == stratified_fraction(corpus(), 0.25, seed=3)
    assert chosen != stratified_fraction(corpus(), 0.25, seed=4)


def test_per_dataset_fractions_replace_the_default_for_that_dataset():
    config = DataConfig(dataset="uime", fraction=0.5, dataset_fractions={"iemocap": 0.1})
    chosen = stratified_fraction(corpus(), config.fraction_of, seed=0)
    assert Counter(d.dataset for d in chosen) == {"meld": 20, "iemocap": 2}  # at least one per stratum
    everything = DataConfig(dataset="uime", fraction=1.0, dataset_fractions={"iemocap": 1.0})
    assert stratified_fraction(corpus(), everything.fraction_of, seed=0) == corpus()


@pytest.mark.parametrize("share", [0, 1.5, -0.1])
def test_a_per_dataset_fraction_outside_0_1_is_an_input_error(share):
    with pytest.raises(InputError, match="iemocap"):
        DataConfig(dataset="uime", dataset_fractions={"iemocap": share})
