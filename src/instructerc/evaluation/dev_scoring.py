"""Dev scoring for the training loop: the predictor on the dev dialogues, sharded over processes.

It lives above both training and inference, so the trainer receives it (from the CLI and the
experiment runner) rather than importing its sibling; see :mod:`instructerc.training.dev`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from instructerc.evaluation.scoring import score_by_dataset, selection_score
from instructerc.training.dev import DevScorer, DevScores, DevSet


def predictor_dev_scoring(dev: DevSet) -> DevScorer:
    """Score a model on ``dev`` with the Predictor, in the training precision."""
    return _DevEvaluator(dev).run


class _DevEvaluator:
    """Scores the model on the dev dialogues, sharded over processes."""

    def __init__(self, dev: DevSet) -> None:
        self.dev = dev

    def run(self, model: Any) -> DevScores:
        from instructerc.inference.predictor import InferenceConfig, Predictor

        dev = self.dev
        accelerator = dev.accelerator
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.eval()
        mine = dev.dialogues[accelerator.process_index :: accelerator.num_processes]
        setup = dev.setup if dev.demonstrations else replace(dev.setup, template=replace(dev.setup.template, demonstration=False))
        retriever = _FixedDemonstrations(dev.demonstrations) if dev.demonstrations else None
        predictor = Predictor(
            unwrapped, dev.hf_tokenizer, setup, retriever=retriever, device=accelerator.device, config=InferenceConfig(workers=dev.workers)
        )
        # Dev is scored in the training precision (autocast reaches the predictor's worker threads).
        with accelerator.autocast():
            predictions = predictor.predict(mine)
        gathered = accelerator.gather_for_metrics([(d.dataset, d.id, p) for d, p in zip(mine, predictions)], use_gather_object=True)
        by_key = {(dataset, dialogue_id): p for dataset, dialogue_id, p in gathered}
        unwrapped.train()
        results = score_by_dataset(dev.dialogues, [by_key[(d.dataset, d.id)] for d in dev.dialogues], dev.setup.label_set)
        return DevScores(selection_score(results), results)


class _FixedDemonstrations:
    """A retriever stand-in that serves demonstrations chosen once, up front."""

    def __init__(self, demonstrations: dict) -> None:
        self._demonstrations = demonstrations

    def demonstrations(self, dialogues, training: bool = False) -> dict:
        return self._demonstrations
