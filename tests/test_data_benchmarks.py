"""The benchmark loaders reproduce the split table of ../shared/data/README.md exactly.

Every expected number below is copied from that README; none is computed from the data.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import pytest

from instructerc.data.cosmic import read_fields
from instructerc.data.dialogue import SPLITS, Dialogue
from instructerc.data.registry import DataSource, label_set_of, load_dialogues
from instructerc.data.stats import SplitStats
from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS
from instructerc.labels.unified import FEELING_WHEEL, INSTRUCTERC

# README "Standard splits": (dialogues, utterances) per split; valid is our "dev".
SPLIT_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "iemocap": {"train": (108, 5163), "dev": (12, 647), "test": (31, 1623)},
    "meld": {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)},
    "emorynlp": {"train": (659, 7551), "dev": (89, 954), "test": (79, 984)},
}
CLASSES = {"iemocap": 6, "meld": 7, "emorynlp": 7}
# README "Test label counts".
TEST_LABELS: dict[str, dict[str, int]] = {
    "iemocap": {"happy": 144, "sad": 245, "neutral": 384, "angry": 170, "excited": 299, "frustrated": 381},
    "meld": {"neutral": 1256, "joy": 402, "anger": 345, "surprise": 281, "sadness": 208, "disgust": 68, "fear": 50},
    "emorynlp": {"Neutral": 288, "Joyful": 217, "Scared": 116, "Peaceful": 111, "Powerful": 96, "Mad": 86, "Sad": 70},
}
# Registered source -> the benchmark it reads.
SOURCES = {
    "meld": "meld",
    "cosmic-meld": "meld",
    "emorynlp": "emorynlp",
    "cosmic-emorynlp": "emorynlp",
    "iemocap": "iemocap",
    "cosmic-iemocap": "iemocap",
}
C1_CONTROLS = re.compile("[\x80-\x9f]")


@functools.cache
def _load(root: Path, name: str, split: str, labels: str = "original") -> list[Dialogue]:
    return load_dialogues(DataSource(name, path=root, labels=labels), split)


def _by_id(dialogues: list[Dialogue]) -> dict[str, Dialogue]:
    return {d.id: d for d in dialogues}


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", SOURCES)
def test_split_sizes_match_readme(data_root: Path, name: str, split: str) -> None:
    stats = SplitStats.of(split, _load(data_root, name, split))
    assert (stats.dialogues, stats.utterances) == SPLIT_SIZES[SOURCES[name]][split]


@pytest.mark.parametrize("name", SOURCES)
def test_test_label_counts_match_readme(data_root: Path, name: str) -> None:
    stats = SplitStats.of("test", _load(data_root, name, "test"))
    assert stats.labels == TEST_LABELS[SOURCES[name]]


@pytest.mark.parametrize("name", SOURCES)
def test_label_set_has_the_readme_number_of_classes(name: str) -> None:
    label_set = label_set_of(DataSource(name))
    assert label_set is BENCHMARK_LABEL_SETS[SOURCES[name]]
    assert len(label_set) == CLASSES[SOURCES[name]]


@pytest.mark.parametrize("name", SOURCES)
def test_every_dialogue_is_tagged_with_its_dataset_and_split(data_root: Path, name: str) -> None:
    for split in SPLITS:
        dialogues = _load(data_root, name, split)
        assert {(d.dataset, d.split) for d in dialogues} == {(SOURCES[name], split)}
        assert len(_by_id(dialogues)) == len(dialogues), "dialogue ids must be unique within a split"
        assert all(u.text and u.text == u.text.strip() for d in dialogues for u in d.utterances)


def _parse_stats_table(out: str) -> tuple[str, dict[str, dict[str, int]]]:
    """The title line and {split: {column: number}} of ``instructerc data stats`` output."""
    title, header, *rows = out.strip().splitlines()
    columns = header.split()
    assert columns[:3] == ["split", "dialogues", "utterances"]
    table = {}
    for row in rows:
        split, *numbers = row.split()
        table[split] = dict(zip(columns[1:], map(int, numbers), strict=True))
    return title, table


@pytest.mark.parametrize("name", SOURCES)
def test_cli_stats_prints_the_readme_table(data_root: Path, run_cli, name: str) -> None:
    result = run_cli("data", "stats", "--dataset", name, "--data", data_root)

    assert (result.code, result.err) == (0, "")
    title, table = _parse_stats_table(result.out)
    dataset = SOURCES[name]
    assert title == f"{name} (labels: {dataset})"
    assert list(table) == list(SPLITS)
    for split, (dialogues, utterances) in SPLIT_SIZES[dataset].items():
        assert (table[split]["dialogues"], table[split]["utterances"]) == (dialogues, utterances)
    test_row = {k: v for k, v in table["test"].items() if k not in ("dialogues", "utterances")}
    assert test_row == TEST_LABELS[dataset]


@pytest.mark.parametrize("split", SPLITS)
def test_meld_pickle_text_equals_csv_after_mojibake_repair(data_root: Path, split: str) -> None:
    fields = read_fields(data_root / "cosmic" / "meld.pkl", "meld")
    raw_texts = [text for key in fields[split] for text in fields["sentences"][key]]
    assert any("\x92" in text for text in raw_texts), "the raw pickle must carry cp1252 mojibake, or this test proves nothing"

    csv = _by_id(_load(data_root, "meld", split))
    pickled = _load(data_root, "cosmic-meld", split)
    assert [d.id for d in pickled] == list(csv)
    for dialogue in pickled:
        expected = csv[dialogue.id]
        assert [u.text for u in dialogue.utterances] == [u.text for u in expected.utterances], f"{split} dialogue {dialogue.id}"
        assert [u.emotion for u in dialogue.utterances] == [u.emotion for u in expected.utterances], f"{split} dialogue {dialogue.id}"
    assert not any(C1_CONTROLS.search(u.text) for d in pickled for u in d.utterances)


def test_meld_pickle_ids_are_shifted_back_to_csv_dialogue_ids(data_root: Path) -> None:
    # README: dev = 1039 + Dialogue_ID; test = 1153 + Dialogue_ID.
    dev, test = _load(data_root, "cosmic-meld", "dev"), _load(data_root, "cosmic-meld", "test")
    assert all(d.extra["cosmic_id"] == 1039 + int(d.id) for d in dev)
    assert all(d.extra["cosmic_id"] == 1153 + int(d.id) for d in test)
    assert "60" not in _by_id(_load(data_root, "cosmic-meld", "train")), "README: train dialogue 60 is absent"


@pytest.mark.parametrize("split", SPLITS)
def test_emorynlp_csv_and_pickle_agree_on_texts_and_labels(data_root: Path, split: str) -> None:
    csv = _by_id(_load(data_root, "emorynlp", split))
    pickled = _by_id(_load(data_root, "cosmic-emorynlp", split))
    assert set(pickled) == set(csv)
    for dialogue_id, dialogue in csv.items():
        other = pickled[dialogue_id]
        assert [u.text for u in other.utterances] == [u.text for u in dialogue.utterances], dialogue_id
        assert [u.emotion for u in other.utterances] == [u.emotion for u in dialogue.utterances], dialogue_id


def test_emorynlp_speakers_are_names_in_csv_and_positions_in_pickle(data_root: Path) -> None:
    csv = _by_id(_load(data_root, "emorynlp", "test"))
    pickled = _by_id(_load(data_root, "cosmic-emorynlp", "test"))
    dialogue_id = next(iter(csv))
    assert all(not s.startswith("Speaker_") for s in csv[dialogue_id].speakers)
    assert pickled[dialogue_id].speakers[0] == "Speaker_0"


# The README test counts summed per unified label (instructerc mapping: IEMOCAP happy/angry/
# frustrated -> joyful/mad/fear, MELD surprise/sadness/joy/anger -> powerful/sad/joyful/mad,
# EmoryNLP Scared -> fear): joyful = 144 + 402 + 217, fear = 381 + 50 + 116, ...
UIME_TEST_LABELS = {
    "joyful": 763,
    "sad": 523,
    "neutral": 1928,
    "mad": 601,
    "excited": 299,
    "fear": 547,
    "disgust": 68,
    "peaceful": 111,
    "powerful": 377,
}
# The same for the feeling-wheel mapping (frustrated kept, scared = 50 + 116, surprise kept).
WHEEL_TEST_LABELS = {
    "neutral": 1928,
    "joyful": 763,
    "excited": 299,
    "peaceful": 111,
    "powerful": 96,
    "sad": 523,
    "mad": 601,
    "frustrated": 381,
    "scared": 166,
    "disgust": 68,
    "surprise": 281,
}


def _check_unified(dialogues: list[Dialogue], mapping_labels: tuple[str, ...], to_unified) -> None:
    for dialogue in dialogues:
        for utterance in dialogue.utterances:
            original = utterance.extra["original_emotion"]
            assert original in BENCHMARK_LABEL_SETS[dialogue.dataset]
            assert utterance.emotion in mapping_labels
            assert utterance.emotion == to_unified(dialogue.dataset, original)


def test_uime_loads_all_three_benchmarks_with_the_paper_labels(data_root: Path) -> None:
    source = DataSource("uime", path=data_root)
    assert source.labels == "uime"
    assert label_set_of(source) is INSTRUCTERC.label_set

    test = _load(data_root, "uime", "test")
    per_dataset = Counter(d.dataset for d in test)
    assert per_dataset == {name: sizes["test"][0] for name, sizes in SPLIT_SIZES.items()}
    assert SplitStats.of("test", test).labels == UIME_TEST_LABELS
    _check_unified(test, INSTRUCTERC.label_set.labels, INSTRUCTERC.to_unified)


def test_uime_keeps_each_dialogue_as_its_source_loaded_it(data_root: Path) -> None:
    unified = [d for d in _load(data_root, "uime", "dev") if d.dataset == "meld"]
    original = _load(data_root, "meld", "dev")
    assert [d.id for d in unified] == [d.id for d in original]
    for u, o in zip(unified[0].utterances, original[0].utterances):
        assert (u.speaker, u.text, u.extra["original_emotion"]) == (o.speaker, o.text, o.emotion)


def test_uime_feeling_wheel(data_root: Path) -> None:
    source = DataSource("uime", path=data_root, labels="uime:feeling-wheel")
    assert label_set_of(source) is FEELING_WHEEL.label_set

    test = _load(data_root, "uime", "test", "uime:feeling-wheel")
    assert SplitStats.of("test", test).labels == WHEEL_TEST_LABELS
    _check_unified(test, FEELING_WHEEL.label_set.labels, FEELING_WHEEL.to_unified)
    frustrated = [u for d in test for u in d.utterances if u.extra["original_emotion"] == "frustrated"]
    assert {u.emotion for u in frustrated} == {"frustrated"}


def test_cli_stats_of_uime_feeling_wheel(data_root: Path, run_cli) -> None:
    result = run_cli("data", "stats", "--dataset", "uime", "--labels", "uime:feeling-wheel", "--data", data_root)

    assert result.code == 0
    title, table = _parse_stats_table(result.out)
    assert title == "uime (labels: uime:feeling-wheel)"
    assert table["test"]["utterances"] == 1623 + 2610 + 984
    assert table["test"]["frustrated"] == 381
