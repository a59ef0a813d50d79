"""The label sets of the three benchmarks, in the order of the COSMIC pickles' integer ids.

Verbalizers follow InstructERC's released code (``data_process.py``): MELD's ``sadness``,
``joy`` and ``anger`` are shown as ``sad``, ``joyful`` and ``angry``.
"""

from __future__ import annotations

from instructerc.labels.label_set import LabelSet

IEMOCAP = LabelSet(
    name="iemocap",
    labels=("happy", "sad", "neutral", "angry", "excited", "frustrated"),
    verbalizers=("happy", "sad", "neutral", "angry", "excited", "frustrated"),
)

MELD = LabelSet(
    name="meld",
    labels=("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"),
    verbalizers=("neutral", "surprise", "fear", "sad", "joyful", "disgust", "angry"),
)

EMORYNLP = LabelSet(
    name="emorynlp",
    labels=("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"),
    verbalizers=("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"),
)

BENCHMARK_LABEL_SETS: dict[str, LabelSet] = {ls.name: ls for ls in (IEMOCAP, MELD, EMORYNLP)}
