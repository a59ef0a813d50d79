"""An LLM's weighted F1 against the MiniLM+LR baseline's on the same utterances, per benchmark,
with 95% intervals over resampled dialogues: each system's, and the paired difference's.

The LLM's predictions come from an ``instructerc evaluate`` run on the unified split (its
``predictions.jsonl``, scored as ``evaluate`` scores them: mapped back to each benchmark's own
classes); the baseline is ``instructerc baseline``'s, trained on each benchmark's training split,
C chosen on dev. The difference is scored on the same resampled dialogues for both systems, so
what the two share (hard dialogues) cancels out: narrower than either interval.

    instructerc evaluate --dataset uime --labels uime --data ../shared/data --split test --out EVAL
    python scripts/paired_baseline.py --predictions EVAL/predictions.jsonl --data ../shared/data --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

BENCHMARKS = ("iemocap", "meld", "emorynlp")


def llm_answers(predictions: Path) -> dict[tuple[str, str, int], str | None]:
    """(benchmark, dialogue id, utterance index) -> the LLM's answer in the benchmark's own classes."""
    from instructerc.evaluation.metrics import OUTSIDE
    from instructerc.labels.registry import named_label_set
    from instructerc.labels.unified import mapping_of

    mapping = mapping_of(named_label_set("uime"))
    answers = {}
    with predictions.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            for k, utterance in enumerate(record["utterances"]):
                label = utterance["predicted_emotion"]
                back = None if label is None else (mapping.to_original(record["dataset"], label) or OUTSIDE)
                answers[(record["dataset"], record["id"], k)] = back
    return answers


def main(argv: Sequence[str] | None = None) -> None:
    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.evaluation.baselines import C_GRID, DiscriminativeBaseline, load_encoder
    from instructerc.evaluation.uncertainty import bootstrap_difference, bootstrap_weighted_f1
    from instructerc.labels.benchmarks import BENCHMARK_LABEL_SETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl of `instructerc evaluate` on the uime split")
    parser.add_argument("--data", type=Path, required=True, help="the data root holding the three benchmarks")
    parser.add_argument("--split", default="test", choices=["dev", "test"], help="the split the predictions are of")
    args = parser.parse_args(argv)

    answers, encoder = llm_answers(args.predictions), load_encoder()
    for benchmark in BENCHMARKS:
        source = DataSource(benchmark, args.data)
        label_set = BENCHMARK_LABEL_SETS[benchmark]
        train, dev, target = (load_dialogues(source, split) for split in ("train", "dev", args.split))
        baseline = DiscriminativeBaseline.fit(train, dev, label_set, encoder, C_GRID, None, False).predict(target)
        gold, llm, lr, groups = [], [], [], []
        for position, (dialogue, predicted) in enumerate(zip(target, baseline)):
            for k, (utterance, prediction) in enumerate(zip(dialogue.utterances, predicted)):
                if utterance.emotion is None:
                    continue
                key = (benchmark, dialogue.id, k)
                if key not in answers:
                    raise SystemExit(f"{args.predictions}: no prediction for utterance {k} of {benchmark} dialogue '{dialogue.id}'")
                gold.append(utterance.emotion)
                llm.append(answers[key])
                lr.append(prediction.label)
                groups.append(position)
        classes = list(label_set.labels)
        one, two = (bootstrap_weighted_f1(gold, p, groups, classes) for p in (llm, lr))
        diff = bootstrap_difference(gold, llm, lr, groups, classes)
        print(
            f"{benchmark:9} LLM {one.estimate:.2f} [{one.low:.2f}, {one.high:.2f}]  MiniLM+LR {two.estimate:.2f} "
            f"[{two.low:.2f}, {two.high:.2f}]  LLM - MiniLM+LR {diff.estimate:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]  "
            f"({diff.groups} dialogues)",
            flush=True,
        )


if __name__ == "__main__":
    main()
