"""Dev weighted F1 of an LLM's label scores fused with the MiniLM+LR baseline's, per benchmark.

Checks whether a product of experts, log p_llm + w log p_lr over each benchmark's own classes,
would lift the default model: the baseline (``instructerc baseline``'s features and classifier) is
trained on each benchmark's training split, the LLM's scores come from an ``instructerc evaluate``
run on the unified dev split (its ``predictions.jsonl``). Every w is scored on dev itself, so the
best figure per row is an upper bound of what a w chosen on held-out data would give.

    instructerc evaluate --dataset uime --labels uime --data ../shared/data --split dev --out EVAL
    python scripts/fuse_baseline.py --predictions EVAL/predictions.jsonl --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

BENCHMARKS = ("iemocap", "meld", "emorynlp")
WEIGHTS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
C_VALUES = (0.3, 1.0)  # the two values the baseline's dev choice moves between


def main(argv: Sequence[str] | None = None) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.evaluation.baselines import context_features, load_encoder, utterance_embeddings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, required=True, help="predictions.jsonl of `instructerc evaluate` on the uime dev split")
    parser.add_argument("--data", type=Path, required=True, help="the data root holding the three benchmarks")
    args = parser.parse_args(argv)

    with args.predictions.open(encoding="utf-8") as lines:
        predicted = [json.loads(line) for line in lines]
    encoder = load_encoder()

    def features(dialogues):
        return context_features(utterance_embeddings(dialogues, encoder), [len(d) for d in dialogues])

    for benchmark in BENCHMARKS:
        source = DataSource(benchmark, args.data)
        train, dev = load_dialogues(source, "train"), load_dialogues(source, "dev")
        rows = [u for p in predicted if p["dataset"] == benchmark for u in p["utterances"]]
        gold = np.array([u.emotion for d in dev for u in d.utterances])
        if [u["original_emotion"] for u in rows] != gold.tolist():
            raise SystemExit(f"{args.predictions}: its {benchmark} utterances are not those of the dev split")
        unified = {u["original_emotion"]: u["emotion"] for u in rows}
        classes = sorted({u.emotion for d in train for u in d.utterances})
        llm = np.array([[u["emotion_scores"][unified[c]] for c in classes] for u in rows])
        llm = np.log(llm / llm.sum(1, keepdims=True) + 1e-12)
        as_given = [next((c for c, v in unified.items() if v == u["predicted_emotion"]), "") for u in rows]

        def f1(labels) -> float:
            return 100 * f1_score(gold, labels, average="weighted")

        x_train, y_train, x_dev = features(train), [u.emotion for d in train for u in d.utterances], features(dev)
        for c in C_VALUES:
            lr = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
            baseline = np.log(lr.predict_proba(x_dev) + 1e-12)
            if list(lr.classes_) != classes:
                raise SystemExit(f"{benchmark}: the training split lacks a class")
            fused = "  ".join(f"w={w}: {f1(np.array(classes)[(llm + w * baseline).argmax(1)]):.2f}" for w in WEIGHTS)
            print(f"{benchmark:9} C={c}  LLM {f1(as_given):.2f}  LR {f1(np.array(classes)[baseline.argmax(1)]):.2f}  {fused}", flush=True)


if __name__ == "__main__":
    main()
