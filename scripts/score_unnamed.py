"""Weighted F1 per benchmark when the dialogues name no benchmark, as a user's own conversations.

A model trained with ``template.dataset_classes`` is told a named benchmark's classes; this
scores what it does without that help: each dialogue of the unified split is predicted under a
dataset name no benchmark has, then scored against its benchmark's gold (unified) labels, a
label outside the benchmark's classes counting as an error, as ``instructerc evaluate`` counts it.

    python scripts/score_unnamed.py --model runs/uime-v12/model --data ../shared/data --split dev
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Sequence

BENCHMARKS = ("iemocap", "meld", "emorynlp")


def main(argv: Sequence[str] | None = None) -> None:
    from sklearn.metrics import f1_score

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.inference.predictor import Predictor
    from instructerc.modeling.default_model import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model directory (default: the shipped model)")
    parser.add_argument("--data", type=Path, required=True, help="the data root holding the three benchmarks")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    args = parser.parse_args(argv)

    dialogues = load_dialogues(DataSource("uime", str(args.data), labels="uime"), args.split)
    predictor = Predictor.from_directory(args.model or default_model_dir())
    predictions = predictor.predict([replace(d, dataset="unnamed") for d in dialogues])
    for benchmark in BENCHMARKS:
        pairs = [
            (u.emotion, p.label)
            for d, predicted in zip(dialogues, predictions)
            if d.dataset == benchmark
            for u, p in zip(d.utterances, predicted)
            if u.emotion is not None
        ]
        gold = [g for g, _ in pairs]
        shown = [p if p is not None else "<invalid>" for _, p in pairs]
        score = 100 * f1_score(gold, shown, average="weighted", labels=sorted(set(gold)), zero_division=0)
        print(f"{benchmark} {args.split}, named no benchmark: weighted F1 {score:.2f} ({len(gold)} utterances)")


if __name__ == "__main__":
    main()
