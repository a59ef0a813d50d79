"""The contract between the training loop and dev scoring, which is injected from above.

Scoring dev needs the predictor (inference, a sibling of training) and evaluation's metrics
(a layer above), so the trainer cannot build it itself: the CLI and the experiment runner pass
:func:`instructerc.evaluation.dev_scoring.predictor_dev_scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from instructerc.data.dialogue import Dialogue
from instructerc.prompts.setup import PromptSetup


@dataclass(frozen=True)
class DevSet:
    """What a run hands its dev scoring once, before the first stage.

    Attributes:
        setup: the run's prompt setup (template, label set, budget).
        hf_tokenizer: the backbone's Hugging Face tokenizer.
        dialogues: the dev dialogues, the same in every process.
        demonstrations: utterance key -> demonstration, chosen once; empty without retrieval.
        accelerator: the run's ``accelerate.Accelerator`` (device, sharding, gathering).
        workers: CPU threads for forward passes (None: the predictor's default).
    """

    setup: PromptSetup
    hf_tokenizer: Any
    dialogues: list[Dialogue]
    demonstrations: dict
    accelerator: Any
    workers: int | None = None


@dataclass(frozen=True)
class DevScores:
    """One dev evaluation: the score checkpoints are selected by, and metrics per dataset
    (objects with ``weighted_f1`` and ``to_dict()``)."""

    score: float
    by_dataset: Mapping[str, Any]


# Called with the (wrapped) model in every process; returns the same scores in every process.
DevScorer = Callable[[Any], DevScores]
DevScoring = Callable[[DevSet], DevScorer]
