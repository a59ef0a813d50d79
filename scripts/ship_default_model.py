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
from typing import Any, Sequence

from instructerc.errors import InputError

TARGET = Path(__file__).resolve().parents[1] / "src" / "instructerc" / "resources" / "default_model"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a trained model directory (LoRA)")
    parser.add_argument(
        "--test-metrics", type=Path, action="append", default=[], help="metrics.json of instructerc evaluate on a test split (repeatable)"
    )
    parser.add_argument("--training-note", help="what the card's Training lines do not say (a paragraph of the model card)")
    parser.add_argument("--label-note", help="why the model speaks its label set (a paragraph of the model card)")
    args = parser.parse_args(argv)
    # Every input is read before the package's model is replaced; a bad one is one error line.
    try:
        ship(args)
    except InputError as error:
        parser.error(str(error))


def ship(args: argparse.Namespace) -> None:
    from instructerc.modeling.model_dir import DEV_METRICS, MANIFEST, TRAINING_CONFIG, Manifest, write_model_dir
    from instructerc.prompts.setup import PROMPTING_FILE, PromptSetup
    from instructerc.training.checkpoint import TrainState
    from instructerc.training.config import TrainConfig
    from instructerc.training.model_card import write_model_card

    if not args.model.is_dir():
        raise InputError("no such model directory", path=args.model)
    if Manifest.load(args.model).method != "lora":
        raise InputError("only a LoRA adapter is small enough to ship", path=args.model / MANIFEST, field="method")
    for name in (PROMPTING_FILE, TRAINING_CONFIG, DEV_METRICS, *ADAPTER_FILES):
        if not (args.model / name).is_file():
            raise InputError(f"the model directory has no {name}", path=args.model)
    run = _run_summary(args.model.resolve().parent / "metrics.jsonl")
    test = {}
    for path in args.test_metrics:
        test.update(_test_scores(path))
    dev = _read_json(args.model / DEV_METRICS)
    if not isinstance(dev, dict):
        raise InputError("not a JSON object of dev scores", path=args.model / DEV_METRICS)
    config = TrainConfig.from_yaml(args.model / TRAINING_CONFIG)
    setup = PromptSetup.load(args.model)

    def fill(staging: Path) -> None:
        for name in (MANIFEST, PROMPTING_FILE, TRAINING_CONFIG, DEV_METRICS, *ADAPTER_FILES):
            shutil.copy2(args.model / name, staging / name)
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot be read: {error}", path=path) from None
    except json.JSONDecodeError as error:
        raise InputError(f"not JSON: {error.msg}", path=path, line=error.lineno) from None


def _test_scores(path: Path) -> dict:
    """The per-dataset scores of ``instructerc evaluate``'s metrics.json (its LLM system's)."""
    data = _read_json(path)
    systems = data.get("systems") if isinstance(data, dict) else None
    system = (systems.get("llm") if isinstance(systems, dict) else None) if isinstance(data, dict) and "systems" in data else data
    scores = system.get("by_dataset") if isinstance(system, dict) else None
    if not isinstance(scores, dict) or not scores:
        raise InputError("not the metrics.json of instructerc evaluate (no scores by dataset for the llm system)", path=path)
    return scores


def _run_events(metrics: Path) -> list[dict]:
    """The events of the run's ``metrics.jsonl``; each must be an object with an ``event`` and a ``time``."""
    if not metrics.is_file():
        raise InputError("not found; the model directory must sit in its run directory", path=metrics)
    events = []
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"not JSON: {error.msg}", path=metrics, line=number) from None
        if not _is_event(event):
            raise InputError("not a run event (an object with 'event' and a numeric 'time')", path=metrics, line=number)
        event["_line"] = number
        events.append(event)
    return events


def _is_event(event: Any) -> bool:
    """Whether ``event`` is an object with an ``event`` and a numeric ``time`` (true is no time)."""
    if not isinstance(event, dict) or "event" not in event:
        return False
    time = event.get("time")
    return isinstance(time, (int, float)) and not isinstance(time, bool)


def _run_summary(metrics: Path) -> dict:
    """Precision, device and wall time of the run that trained the model: each process of the
    run (a start event, and a resumed run's later ones) counted from its start to its last event,
    so the time between a cut and its --resume is not counted."""
    events = _run_events(metrics)
    starts = [k for k, e in enumerate(events) if e["event"] == "start"]
    if not starts or events[-1]["event"] != "done":
        raise InputError("the run has not finished (no start event, or the last one is not 'done')", path=metrics)
    ends = [k - 1 for k in starts[1:]] + [len(events) - 1]
    seconds = sum(events[end]["time"] - events[start]["time"] for start, end in zip(starts, ends))
    start = events[starts[-1]]
    for name in ("processes", "device"):
        if name not in start:
            raise InputError("the start event has no such field", path=metrics, line=start["_line"], field=name)
    processes = start["processes"]
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        problem = f"a positive number of processes expected, not {processes!r}"
        raise InputError(problem, path=metrics, line=start["_line"], field="processes")
    where = f"{start['processes']} processes on {start['device']}" if start["processes"] > 1 else start["device"]
    return {"seconds": seconds, "precision": start.get("precision"), "device": where}


if __name__ == "__main__":
    main()
