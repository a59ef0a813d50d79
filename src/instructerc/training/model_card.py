"""The model card: how a model was trained and what it scored on dev."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from instructerc.files import atomic_write


def write_model_card(directory: Path, config: Any, setup: Any, dev_metrics: dict[str, Any], state: Any, test_metrics: dict[str, Any] | None = None) -> None:
    template = setup.template
    parts = [name for name in ("instruction", "history", "label_statement", "demonstration") if getattr(template, name)]
    stages = "; ".join(f"{'+'.join(f'{t}x{s:g}' for t, s in stage.tasks.items())} for {stage.epochs:g} epoch(s)" for stage in config.stages)
    lines = [
        f"# instructerc model: {config.backbone.model} on {config.data.dataset} ({config.data.labels} labels)",
        "",
        "Emotion recognition in conversation, fine-tuned with [instructerc](https://pypi.org/project/instructerc/).",
        "",
        "## Training",
        f"- backbone: `{config.backbone.model}`, {config.finetune.method}" + (f" (r={config.finetune.lora.r}, alpha={config.finetune.lora.alpha}, dropout={config.finetune.lora.dropout}, {', '.join(config.finetune.lora.target_modules)})" if config.finetune.method == "lora" else ""),
        f"- data: `{config.data.dataset}` train split, fraction {config.data.fraction:g}, seed {config.seed}",
        f"- template: `{template.name}` with {', '.join(parts)}; window {template.window}; max_length {config.max_length}",
        f"- stages: {stages}",
        f"- optimisation: AdamW lr {config.optim.lr:g}, betas {tuple(config.optim.betas)}, global batch {config.optim.batch_size}, warmup {config.optim.warmup_ratio:g}, linear decay",
        f"- label set `{setup.label_set.name}`: {', '.join(setup.label_set.labels)}",
        f"- checkpoint selected on dev (step {state.best_step}" + (f" of {state.global_step}" if state.global_step else "") + "); the test split was not read during training.",
        "",
        "## Dev scores (the selection split)",
        "",
        "| dataset | weighted F1 | macro F1 | accuracy | utterances |",
        "| --- | --- | --- | --- | --- |",
    ]
    for dataset, m in dev_metrics.get("by_dataset", {}).items():
        lines.append(f"| {dataset} | {m['weighted_f1']:.2f} | {m['macro_f1']:.2f} | {m['accuracy']:.2f} | {m['count']} |")
    if test_metrics:
        lines += ["", "## Test scores (reported once, for the dev-selected checkpoint)", "",
                  "| dataset | weighted F1 | macro F1 | accuracy | utterances |", "| --- | --- | --- | --- | --- |"]
        for dataset, m in test_metrics.items():
            lines.append(f"| {dataset} | {m['weighted_f1']:.2f} | {m['macro_f1']:.2f} | {m['accuracy']:.2f} | {m['count']} |")
    lines += ["", "## Use", "", "```", f"instructerc predict --model {directory.name} --input dialogues.jsonl --output predictions.jsonl", "```", ""]
    with atomic_write(directory / "README.md") as handle:
        handle.write("\n".join(lines))
