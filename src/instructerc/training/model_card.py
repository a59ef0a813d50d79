"""The model card: how a model was trained and what it scored on dev."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructerc.files import atomic_write


def _tasks(stage: Any) -> str:
    return " + ".join(task if share == 1 else f"{task} ({share:.0%} of utterances)" for task, share in stage.tasks.items())


def _history(template: Any) -> str:
    if not template.history:
        return "no history"
    if template.name in ("dialogue-prefix", "dialogue-stream"):
        return "history from the dialogue start"
    return f"history window {template.window}"


def _label_words(config: Any, setup: Any) -> str:
    """Which labels the title names: a JSONL file's own (its label set, by name), not "original"."""
    if config.data.dataset == "jsonl" and config.data.labels == "original":
        return f"`{setup.label_set.name}` labels"
    return f"{config.data.labels} labels"


def _statement(template: Any) -> str:
    """How the label statement is chosen, when it depends on the dialogue."""
    if not template.label_statement or not template.dataset_classes:
        return ""
    dropped = f" (in training, every label for {template.unnamed_share:.0%} of dialogues)" if template.unnamed_share else ""
    return f"; the label statement lists a named benchmark's own classes, every label otherwise{dropped}"


def _optimisation(optim: Any) -> str:
    balance = f"; emotion losses weighted by label count ** -{optim.class_balance:g} (class_balance)" if optim.class_balance else ""
    return (
        f"- optimisation: AdamW lr {optim.lr:g}, betas {tuple(optim.betas)}, global batch {optim.batch_size}, "
        f"warmup {optim.warmup_ratio:g}, linear decay{balance}"
    )


def _adapters(config: Any) -> str:
    if config.finetune.method != "lora":
        return "full fine-tuning"
    lora = config.finetune.lora
    layers = "every layer" if lora.top_layers is None else f"the top {lora.top_layers} layers"
    start = "" if config.finetune.init_adapter is None else f", started from the adapter `{config.finetune.init_adapter}`"
    return f"LoRA r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout} on {', '.join(lora.target_modules)} of {layers}{start}"


def write_model_card(
    directory: Path,
    config: Any,
    setup: Any,
    dev_metrics: dict[str, Any],
    state: Any,
    test_metrics: dict[str, Any] | None = None,
    *,
    location: str | None,
    precision: str | None = None,
    device: str | None = None,
    label_note: str | None = None,
    training_note: str | None = None,
    train_dialogues: int | None = None,
) -> None:
    """``directory`` is where the card is written (possibly a staging folder); ``location`` is
    the path users will load the model from, for the usage line (``None``: the model shipped
    in the package, used without ``--model``). ``precision`` and ``device``: what the matrix
    products ran in, and where. ``label_note``: why the model speaks its label set;
    ``training_note``: what the lines of the Training section do not say (e.g. a resumed run's restart).
    ``train_dialogues``: how many training dialogues the run learned from."""
    template = setup.template
    parts = [name for name in ("instruction", "history", "label_statement", "demonstration") if getattr(template, name)]
    stages = "; then ".join(f"{_tasks(stage)} for {stage.epochs:g} epoch(s)" for stage in config.stages)
    lines = [
        f"# instructerc model: {config.backbone.model} on {config.data.dataset} ({_label_words(config, setup)})",
        "",
        "Emotion recognition in conversation, fine-tuned with instructerc.",
        "",
        "## Training",
        f"- backbone: `{config.backbone.model}`; {_adapters(config)}",
        f"- data: `{config.data.dataset}` train split, fraction {_fractions(config)}{_trained_on(train_dialogues)}, seed {config.seed}",
        f"- template: `{template.name}` with {', '.join(parts) or 'no parts'}; {_history(template)}{_statement(template)}; "
        f"max_length {config.max_length}",
        f"- stages: {stages}",
        _optimisation(config.optim),
        f"- label set `{setup.label_set.name}`: {', '.join(setup.label_set.labels)}",
        *_compute(precision, device, getattr(state, "train_seconds", 0.0)),
        f"- checkpoint selected on dev (step {state.best_step}"
        + (f" of {state.global_step}" if state.global_step else "")
        + "); the test split was not read during training.",
        *(["", training_note] if training_note else []),
        "",
        "## Dev scores (what the checkpoint was selected on)",
        "",
        "| dataset | weighted F1 | macro F1 | accuracy | utterances |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset, m in dev_metrics.get("by_dataset", {}).items():
        lines.append(f"| {dataset} | {m['weighted_f1']:.2f} | {m['macro_f1']:.2f} | {m['accuracy']:.2f} | {m['count']} |")
    if test_metrics:
        lines += [
            "",
            "## Test scores (reported once, for the dev-selected checkpoint)",
            "",
            "| dataset | weighted F1 | macro F1 | accuracy | utterances |",
            "| --- | --- | --- | --- | --- |",
        ]
        for dataset, m in test_metrics.items():
            lines.append(f"| {dataset} | {m['weighted_f1']:.2f} | {m['macro_f1']:.2f} | {m['accuracy']:.2f} | {m['count']} |")
    if config.data.max_dev_dialogues is not None:
        lines += [
            "",
            f"Selection used a fixed, seeded subset of at most {config.data.max_dev_dialogues} dev dialogues per dataset; "
            "`instructerc evaluate --split dev` scores the whole split.",
        ]
    lines += _labels_section(setup.label_set, label_note)
    lines += [
        "",
        "## Use",
        "",
        "```",
        "instructerc predict"
        + ("" if location is None else f" --model {location}")
        + " --input dialogues.jsonl --output predictions.jsonl",
        "```",
        "",
    ]
    with atomic_write(directory / "README.md") as handle:
        handle.write("\n".join(lines))


def _labels_section(label_set: Any, note: str | None) -> list[str]:
    """For a unified label set: what each label stands for in each benchmark, and how to read answers in a dataset's own words."""
    from instructerc.labels.unified import mapping_of

    mapping = mapping_of(label_set)
    if mapping is None:
        return []
    lines = ["", "## Labels", "", f"The model answers in the `{label_set.name}` labels ({mapping.name} mapping). Each stands for:", ""]
    for label in label_set.labels:
        sources = [
            f"{dataset} `{original}`" for dataset, table in mapping.forward.items() for original, target in table.items() if target == label
        ]
        lines.append(f"- `{label}`: {', '.join(sources) or 'no benchmark class'}")
    lines += [
        "",
        'A dialogue that names its dataset (`"dataset": "meld"`, `"iemocap"` or `"emorynlp"`) also gets, from `instructerc predict`, '
        "`predicted_original_emotion`: the best-scoring of that dataset's own classes, in its own words.",
    ]
    if note:
        lines += ["", note]
    return lines


def _compute(precision: str | None, device: str | None, seconds: float) -> list[str]:
    if precision is None:
        return []
    where = f" on {device}" if device else ""
    time = f"; {seconds / 60:.1f} minutes of training and dev scoring{where}" if seconds else where
    return [f"- precision: {precision} matrix products, float32 trainable weights{time}"]


def _fractions(config: Any) -> str:
    overrides = ", ".join(f"{name} {share:g}" for name, share in sorted(config.data.dataset_fractions.items()))
    return f"{config.data.fraction:g}" + (f" ({overrides})" if overrides else "")


def _trained_on(dialogues: int | None) -> str:
    """The dialogues actually trained on: a stratified fraction keeps at least one dialogue per
    stratum, so at a small fraction the run learns from more than the fraction says (0.01 of 24
    dialogues is 3 of them), and the card would otherwise understate the data behind the scores."""
    return "" if dialogues is None else f" ({dialogues} dialogue{'' if dialogues == 1 else 's'})"
