"""IEMOCAP: the COSMIC pickle, or the raw release as USC distributes it.

The raw layout is ``Session{1..5}/dialog/transcriptions/<dialogue>.txt`` (lines
``<turn> [<start>-<end>]: <text>``) and ``Session{1..5}/dialog/EmoEvaluation/<dialogue>.txt``
(lines ``[<start> - <end>]\\t<turn>\\t<code>\\t[V, A, D]``). The literature's 6-class convention is
kept: happy and excited stay apart, and turns whose consensus label is none of the six
(``xxx``, ``oth``, ``fea``, ``sur``, ``dis``) are dropped, as in the COSMIC pickle. Session 5 is test;
dev is the 12 dialogues of sessions 1-4 that the COSMIC pickle uses for validation, so both
sources give the same splits.
"""

from __future__ import annotations

import re
from pathlib import Path

from instructerc.data.cosmic import read_cosmic
from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.loader import Loader
from instructerc.errors import InputError
from instructerc.labels.benchmarks import IEMOCAP
from instructerc.labels.label_set import LabelSet

CODES = {"hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated"}
COSMIC_DEV_DIALOGUES = frozenset(
    {
        "Ses01M_impro01",
        "Ses01M_script03_1",
        "Ses02F_impro02",
        "Ses02F_impro07",
        "Ses02M_script01_2",
        "Ses03F_impro01",
        "Ses03M_impro02",
        "Ses03M_impro08a",
        "Ses03M_script02_2",
        "Ses03M_script03_2",
        "Ses04F_impro07",
        "Ses04F_script02_1",
    }
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<turn>Ses\S+) \[[\d.]+-[\d.]+\]:\s?(?P<text>.*)$")
_EVALUATION_LINE = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(?P<turn>\S+)\t(?P<code>\S+)\t\[")


def is_raw_release(path: Path) -> bool:
    return path.is_dir() and any(path.glob("Session[1-5]/dialog/transcriptions"))


def split_of(dialogue_id: str) -> str:
    if dialogue_id.startswith("Ses05"):
        return "test"
    return "dev" if dialogue_id in COSMIC_DEV_DIALOGUES else "train"


def read_evaluation(file: Path) -> dict[str, str]:
    """Turn name -> consensus code, from one EmoEvaluation file."""
    codes = {}
    for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _EVALUATION_LINE.match(line)
        if match:
            codes[match["turn"]] = match["code"]
    return codes


def read_raw_dialogue(transcript: Path, evaluation: Path, split: str, label_set: LabelSet) -> Dialogue:
    codes = read_evaluation(evaluation)
    utterances = []
    for number, line in enumerate(transcript.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        match = _TRANSCRIPT_LINE.match(line.strip())
        if not match or codes.get(match["turn"]) not in CODES:
            continue
        text = match["text"].strip()
        if not text:
            raise InputError("empty utterance text", path=transcript, line=number)
        turn = match["turn"]
        label = label_set.canonical(CODES[codes[turn]])
        utterances.append(Utterance(speaker=turn.rsplit("_", 1)[1][0], text=text, emotion=label, extra={"turn": turn}))
    return Dialogue(id=transcript.stem, dataset="iemocap", split=split, utterances=tuple(utterances))


def read_raw_release(root: Path, split: str, label_set: LabelSet | None = IEMOCAP) -> list[Dialogue]:
    label_set = label_set or IEMOCAP
    dialogues = []
    for transcript in sorted(root.glob("Session[1-5]/dialog/transcriptions/*.txt")):
        if transcript.name.startswith("._") or split_of(transcript.stem) != split:
            continue
        evaluation = transcript.parent.parent / "EmoEvaluation" / transcript.name
        if not evaluation.is_file():
            raise InputError("no EmoEvaluation file for this transcription", path=transcript)
        dialogue = read_raw_dialogue(transcript, evaluation, split, label_set)
        if dialogue.utterances:
            dialogues.append(dialogue)
    return dialogues


def read_iemocap(path: Path, split: str, label_set: LabelSet | None = IEMOCAP) -> list[Dialogue]:
    for candidate in (path, path / "IEMOCAP_full_release", path / "iemocap"):
        if is_raw_release(candidate):
            return read_raw_release(candidate, split, label_set)
    return read_cosmic(path, split, label_set, dataset="iemocap")


LOADER = Loader(
    name="iemocap",
    description="IEMOCAP: raw USC release (Session*/dialog/...) or the COSMIC pickle",
    read=read_iemocap,
    label_set=IEMOCAP,
)
