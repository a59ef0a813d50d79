"""Probes of the data readers: where a dialogue came from, partial benchmark splits, odd files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructerc.config import from_mapping
from instructerc.errors import InputError


def _dialogue(dialogue_id: str, text: str) -> str:
    utterances = [{"speaker": "Ann", "text": "Hi there.", "emotion": "joy"}, {"speaker": "Bob", "text": text, "emotion": "neutral"}]
    return json.dumps({"id": dialogue_id, "utterances": utterances})


def test_a_training_utterance_too_long_names_its_file_and_line(tmp_path: Path, backbone: Path) -> None:
    from transformers import AutoTokenizer

    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.setup import PromptSetup
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    data = tmp_path / "data"
    data.mkdir()
    long_text = " ".join(["words"] * 400)
    (data / "train.jsonl").write_text(_dialogue("short", "Fine.") + "\n\n" + _dialogue("long", long_text) + "\n", encoding="utf-8")
    (data / "dev.jsonl").write_text(_dialogue("dev", "Fine.") + "\n", encoding="utf-8")
    config = from_mapping(
        TrainConfig,
        {
            "data": {"dataset": "jsonl", "path": str(data), "label_set": "meld"},
            "backbone": {"model": str(backbone)},
            "template": {"name": "dialogue-prefix", "demonstration": False},
            "stages": [{"tasks": {"erc": 1.0}, "epochs": 1}],
            "max_length": 128,
            "output_dir": str(tmp_path / "run"),
        },
    )
    train = load_dialogues(config.data.source(), "train")
    setup = PromptSetup(config.template, label_set_of(config.data.source()), config.max_length, config.retrieval)
    tokenizer = SegmentTokenizer(AutoTokenizer.from_pretrained(str(backbone)))
    trainer = Trainer(config, progress=False, dev_scoring=predictor_dev_scoring)
    with pytest.raises(InputError) as error:
        trainer._stage_examples(0, train, setup, {}, tokenizer)
    assert f"{data / 'train.jsonl'}:3" in str(error.value)
    assert "dialogue 'long'" in str(error.value)


def test_a_python_dialogue_too_long_keeps_its_message() -> None:
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.budget import PromptTooLong, encode_example
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.tasks import ExampleBuilder
    from instructerc.prompts.templates import TemplateConfig, build_template
    from tiny import Words

    dialogue = Dialogue("d", "meld", "train", (Utterance("A", " ".join(["w"] * 300), "joy"),))
    example = ExampleBuilder(build_template(TemplateConfig(demonstration=False), MELD), {}).erc(dialogue, 0)
    with pytest.raises(PromptTooLong) as error:
        encode_example(example, SegmentTokenizer(Words()), 64)
    assert str(error.value).startswith("field 'max_length': dialogue 'd', utterance 0 needs ")


MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"


def _meld_folder(root: Path) -> Path:
    """A MELD folder whose splits are far smaller than the published ones (a truncated copy)."""
    folder = root / "meld"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        rows = [f'{i},Line {i}.,Ann,joy,positive,{i // 2},{i % 2},1,1,"0:00:01,000","0:00:02,000"\n' for i in range(6)]
        (folder / f"{split}_sent_emo.csv").write_text(MELD_HEADER + "".join(rows), encoding="utf-8")
    return folder


def test_data_stats_warns_once_per_split_of_a_partial_benchmark_copy(tmp_path: Path, run_cli) -> None:
    folder = _meld_folder(tmp_path)
    result = run_cli("data", "stats", "--dataset", "meld", "--data", tmp_path)
    assert result.code == 0
    warnings = [line for line in result.err.splitlines() if line.startswith("instructerc: warning:")]
    assert len(warnings) == 3
    assert warnings[0] == (
        f"instructerc: warning: {folder / 'train_sent_emo.csv'}: 3 dialogues / 6 utterances, but the published MELD train split "
        "has 1038 / 9989: a partial or altered copy? (scores on it are not comparable with published ones)"
    )
    assert "published MELD dev split has 114 / 1109" in warnings[1]
    # Read again in the same process (a second stage, a second model): said once.
    again = run_cli("data", "export", "--dataset", "meld", "--data", tmp_path, "--split", "train", "--out", tmp_path / "out.jsonl")
    assert again.code == 0 and "warning" not in again.err


def test_a_complete_split_reads_without_warning(data_root: Path, capsys) -> None:
    from instructerc.data.registry import DataSource, load_dialogues

    for name in ("meld", "emorynlp", "cosmic-iemocap"):
        load_dialogues(DataSource(name, path=data_root), "dev")
    assert capsys.readouterr().err == ""


def test_a_truncated_copy_of_the_real_meld_file_warns(data_root: Path, tmp_path: Path, capsys) -> None:
    from instructerc.data.registry import DataSource, load_dialogues

    folder = tmp_path / "meld"
    folder.mkdir()
    lines = (data_root / "meld" / "dev_sent_emo.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "dev_sent_emo.csv").write_text("".join(lines[:501]), encoding="utf-8")
    dialogues = load_dialogues(DataSource("meld", path=tmp_path), "dev")
    assert sum(len(d) for d in dialogues) == 500
    assert f"{folder / 'dev_sent_emo.csv'}: {len(dialogues)} dialogues / 500 utterances" in capsys.readouterr().err


def test_an_iemocap_release_with_dialogues_missing_warns_naming_its_folder(tmp_path: Path, capsys) -> None:
    from instructerc.data.iemocap import read_iemocap

    release = Path(__file__).parent / "fixtures" / "iemocap_raw"
    dialogues = read_iemocap(release, "test")
    assert dialogues
    err = capsys.readouterr().err
    assert err.startswith(f"instructerc: warning: {release}: {len(dialogues)} dialogues / ")
    assert "the published IEMOCAP test split has 31 / 1623" in err


def test_a_partial_split_before_a_broken_one_leaves_the_error_alone_on_its_line(tmp_path: Path, run_cli) -> None:
    folder = _meld_folder(tmp_path)
    (folder / "dev_sent_emo.csv").write_text(MELD_HEADER + "1,Hi.,Ann,joy\n", encoding="utf-8")
    result = run_cli("data", "stats", "--dataset", "meld", "--data", tmp_path)
    assert result.code == 2
    [line] = result.err.splitlines()
    assert line.startswith(f"instructerc: error: {folder / 'dev_sent_emo.csv'}:2: row has 4 fields")
    # The warning held back is given when the train split is next read.
    again = run_cli("data", "export", "--dataset", "meld", "--data", tmp_path, "--split", "train", "--out", tmp_path / "out.jsonl")
    assert again.code == 0 and "published MELD train split" in again.err


EMORYNLP_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time\n"


def _emorynlp_folder(root: Path, speaker_field: str) -> Path:
    folder = root / "emorynlp"
    folder.mkdir()
    row = f'Hi.,"{speaker_field}",Joyful,1,0,1,1,a,b\nYo.,"[\'Monica\']",Joyful,1,1,1,1,a,b\n'
    for split in ("train", "dev", "test"):
        (folder / f"emorynlp_{split}_final.csv").write_text(EMORYNLP_HEADER + row, encoding="utf-8")
    return folder


def test_an_emorynlp_speaker_whose_escape_is_a_line_break_is_refused(tmp_path: Path) -> None:
    from instructerc.data.emorynlp import read_emorynlp_csv

    folder = _emorynlp_folder(tmp_path, "['Mon\\nica']")  # the literal's \n escape is a line break once read
    with pytest.raises(InputError) as error:
        read_emorynlp_csv(tmp_path, "dev")
    assert (error.value.path, error.value.line, error.value.field) == (str(folder / "emorynlp_dev_final.csv"), 2, "Speaker")
    assert "line break" in error.value.message


def test_an_emorynlp_speaker_is_read_as_its_jsonl_export_reads_it(tmp_path: Path) -> None:
    from instructerc.data.emorynlp import read_emorynlp_csv
    from instructerc.data.jsonl import read_jsonl, write_jsonl

    _emorynlp_folder(tmp_path, "['\\u200bMonica ']")
    [dialogue] = read_emorynlp_csv(tmp_path, "dev")
    assert dialogue.speakers == ("Monica",)
    write_jsonl([dialogue], tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl", "dev")[0].speakers == dialogue.speakers


def test_a_huge_emorynlp_speaker_field_is_shown_shortened(tmp_path: Path) -> None:
    from instructerc.data.emorynlp import read_emorynlp_csv

    _emorynlp_folder(tmp_path, "[" * 5000 + "]")
    with pytest.raises(InputError) as error:
        read_emorynlp_csv(tmp_path, "dev")
    assert "Speaker must be a non-empty list of names" in error.value.message and len(str(error.value)) < 400


@pytest.mark.parametrize("folder", ["transcriptions", "EmoEvaluation"])
def test_an_iemocap_file_saved_with_a_byte_order_mark_keeps_its_first_turn(tmp_path: Path, folder: str) -> None:
    import shutil

    from instructerc.data.iemocap import read_iemocap

    release = tmp_path / "iemocap_raw"
    shutil.copytree(Path(__file__).parent / "fixtures" / "iemocap_raw", release)
    dialog = release / "Session5" / "dialog"
    evaluation = dialog / "EmoEvaluation" / "Ses05F_impro01.txt"
    # Its first turn labelled neutral, and first in the evaluation file, so a mark at either file's start hides it.
    lines = [line.replace("F000\tsur", "F000\tneu") for line in evaluation.read_text(encoding="utf-8").splitlines(keepends=True)]
    first = next(i for i, line in enumerate(lines) if "F000" in line)
    evaluation.write_text("".join([lines[first], *lines[:first], *lines[first + 1 :]]), encoding="utf-8")
    before = [u.extra["turn"] for u in read_iemocap(release, "test")[0].utterances]
    assert before[0] == "Ses05F_impro01_F000"
    marked = dialog / folder / "Ses05F_impro01.txt"
    marked.write_bytes(b"\xef\xbb\xbf" + marked.read_bytes())
    assert [u.extra["turn"] for u in read_iemocap(release, "test")[0].utterances] == before
