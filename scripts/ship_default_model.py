"""Copy a trained LoRA model into the package as the default model (a few MB).

The adapter weights are copied as trained, in float32 (10 MB): cast to float16 they moved the
v5 model's test weighted F1 by up to 0.27 points, and the card's scores must be the shipped
model's. The tokenizer is not copied, since the backbone's own is used. The model card gains the
test scores given with --test-metrics (from ``instructerc evaluate``), which are read once, after
training, for the dev-selected checkpoint.

    python scripts/ship_default_model.py runs/cpu/run-XXXX/model --test-metrics EVAL_DIR/metrics.json

The card's precision, device and wall time come from the run's ``metrics.jsonl`` (its start and
done events), read from the model directory's parent run directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src" / "instructerc" / "resources" / "default_model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a trained model directory (LoRA)")
    parser.add_argument(
        "--test-metrics", type=Path, action="append", default=[], help="metrics.json of instructerc evaluate on a test split (repeatable)"
    )
    parser.add_argument("--training-note", help="what the card's Training lines do not say (a paragraph of the model card)")
    parser.add_argument("--label-note", help="why the model speaks its label set (a paragraph of the model card)")
    args = parser.parse_args()
    run = _run_summary(args.model.resolve().parent / "metrics.jsonl")

    from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST, TRAINING_CONFIG, Manifest, write_model_dir
    from instructerc.prompts.setup import PROMPTING_FILE, PromptSetup
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import TrainConfig
    from instructerc.training.model_card import write_model_card

    if Manifest.load(args.model).method != "lora":
        raise SystemExit("only a LoRA adapter is small enough to ship")
    test = {}
    for path in args.test_metrics:
        data = json.loads(path.read_text(encoding="utf-8"))
        system = data["systems"]["llm"] if "systems" in data else data
        test.update(system["by_dataset"])
    dev = json.loads((args.model / DEV_METRICS).read_text(encoding="utf-8"))
    config = TrainConfig.from_yaml(args.model / TRAINING_CONFIG)
    setup = PromptSetup.load(args.model)

    def fill(staging: Path) -> None:
        for name in (MANIFEST, PROMPTING_FILE, "adapter_config.json", TRAINING_CONFIG, DEV_METRICS):
            shutil.copy2(args.model / name, staging / name)
        shutil.copy2(args.model / "adapter_model.safetensors", staging / "adapter_model.safetensors")
        write_model_card(
            staging,
            config,
            setup,
            dev,
            TrainState(best_step=dev.get("step"), train_seconds=run["seconds"]),
            test_metrics=test or None,
            location=None,
            precision=run["precision"],
            device=run["device"],
            label_note=args.label_note,
            training_note=args.training_note,
        )

    write_model_dir(TARGET, fill)
    size = sum(p.stat().st_size for p in TARGET.iterdir())
    print(f"shipped {TARGET} ({size / 1e6:.1f} MB)")


def _run_summary(metrics: Path) -> dict:
    """Precision, device and wall time of the run that trained the model: each process of the
    run (a start event, and a resumed run's later ones) counted from its start to its last event,
    so the time between a cut and its --resume is not counted."""
    if not metrics.is_file():
        raise SystemExit(f"{metrics}: not found; the model directory must sit in its run directory")
    events = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    starts = [k for k, e in enumerate(events) if e["event"] == "start"]
    if not starts or events[-1]["event"] != "done":
        raise SystemExit(f"{metrics}: the run has not finished")
    ends = [k - 1 for k in starts[1:]] + [len(events) - 1]
    seconds = sum(events[end]["time"] - events[start]["time"] for start, end in zip(starts, ends))
    start = events[starts[-1]]
    where = f"{start['processes']} processes on {start['device']}" if start["processes"] > 1 else start["device"]
    return {"seconds": seconds, "precision": start.get("precision"), "device": where}


if __name__ == "__main__":
    main()
