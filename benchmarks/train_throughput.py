"""Training throughput: instructerc's loop against a plain transformers.Trainer.

Both train the embedded SmolLM2-135M-Instruct with the paper's LoRA (r=16, alpha=16, dropout
0.05 on q/k/v of every layer) on the same examples (the InstructERC retrieval template on a fixed
slice of MELD train), the same global batch and learning rate. The Trainer computes the full
vocabulary logits at every position and pads each random batch to its longest example, as a
plain setup does; instructerc packs each step's prompts as prefix trees and projects onto the
vocabulary only at target positions.

Throughput counts the *examples' own tokens* (prompt + target, unpacked, unpadded) per second,
so both variants are measured against the same amount of data. Each variant runs in its own
process so that its peak memory (max RSS) is its own.

    python benchmarks/train_throughput.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def build_examples(data: Path, dialogues: int, max_length: int):
    from instructerc.data.registry import DataSource, label_set_of, load_dialogues
    from instructerc.modeling.backbone import BackboneConfig, load_tokenizer, resolve_model
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.example import Task
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.index import RetrievalConfig
    from instructerc.retrieval.retriever import DemonstrationRetriever

    source = DataSource("meld", data)
    train = load_dialogues(source, "train")
    chosen = train[:dialogues]
    setup = PromptSetup(TemplateConfig(), label_set_of(source), max_length, RetrievalConfig())
    retriever = DemonstrationRetriever.build(train, setup.retrieval)
    demonstrations = retriever.demonstrations(chosen, training=True)
    path = resolve_model(BackboneConfig())
    tokenizer = load_tokenizer(path)
    examples = setup.encode(list(setup.builder(demonstrations).examples(Task.ERC, chosen)), SegmentTokenizer(tokenizer))
    return examples, tokenizer, path


def lora_model(path: str):
    from peft import LoraConfig, get_peft_model

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm

    model = load_causal_lm(path, BackboneConfig())
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj"], task_type="CAUSAL_LM"))


def run_ours(examples, tokenizer, path, batch_size: int, steps: int) -> dict:
    import torch
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    from instructerc.training.batches import epoch_order
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    torch.manual_seed(0)
    model = lora_model(path)
    config = TrainConfig(optim=TrainConfig().optim.__class__(lr=2e-4, batch_size=batch_size, micro_batch_size=batch_size))
    trainer = Trainer(config, progress=False)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, betas=(0.9, 0.95))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps + 1)
    order = epoch_order(examples, 0, by_dialogue=True)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    timings = []
    for step in range(steps + 1):
        batch = batches[step % len(batches)]
        started = time.perf_counter()
        trainer._step(model, optimizer, scheduler, accelerator, examples, batch, 0, 1, tokenizer.pad_token_id)
        if step:  # the first step warms up allocators and kernels
            timings.append((time.perf_counter() - started, sum(len(examples[i]) for i in batch), len(batch)))
    return summarize("instructerc", timings)


def run_trainer(examples, tokenizer, path, batch_size: int, steps: int, output: Path) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = lora_model(path)
    rows = [{"input_ids": list(e.input_ids), "attention_mask": [1] * len(e), "labels": [-100] * len(e.prompt_ids) + list(e.target_ids)} for e in examples]
    timings: list[tuple[float, int, int]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings.append((time.perf_counter() - self.started, 0, batch_size))

    arguments = TrainingArguments(
        output_dir=str(output), per_device_train_batch_size=batch_size, learning_rate=2e-4, adam_beta2=0.95, max_steps=steps + 1,
        lr_scheduler_type="linear", logging_steps=1000, save_strategy="no", report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    trainer.train()
    # Tokens per step: the Trainer samples randomly, so use the mean example length for its steps.
    mean_length = sum(len(e) for e in examples) / len(examples)
    timings = [(t, round(mean_length * n), n) for t, _, n in timings[1:]]
    return summarize("transformers.Trainer (full-vocabulary logits)", timings)


def summarize(name: str, timings: list[tuple[float, int, int]]) -> dict:
    seconds = sum(t for t, _, _ in timings)
    return {
        "variant": name,
        "steps": len(timings),
        "seconds": seconds,
        "examples_per_s": sum(n for _, _, n in timings) / seconds,
        "data_tokens_per_s": sum(k for _, k, _ in timings) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(args: argparse.Namespace) -> None:
    import tempfile

    examples, tokenizer, path = build_examples(args.data, args.dialogues, args.max_length)
    if args.variant == "ours":
        result = run_ours(examples, tokenizer, path, args.batch_size, args.steps)
    else:
        result = run_trainer(examples, tokenizer, path, args.batch_size, args.steps, Path(tempfile.mkdtemp()))
    result["examples"] = len(examples)
    result["mean_example_tokens"] = sum(len(e) for e in examples) / len(examples)
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dialogues", type=int, default=16, help="the first N MELD training dialogues are the slice")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after one warm-up step)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--variant", choices=["ours", "trainer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    results = []
    for variant in ("trainer", "ours"):
        command = [sys.executable, __file__, "--variant", variant, "--data", str(args.data), "--dialogues", str(args.dialogues),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--max-length", str(args.max_length)]
        done = subprocess.run(command, capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT "):]))
    print(f"MELD train slice: {results[0]['examples']} examples, mean {results[0]['mean_example_tokens']:.0f} tokens, batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'variant':50} {'examples/s':>11} {'data tok/s':>11} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['variant']:50} {r['examples_per_s']:11.2f} {r['data_tokens_per_s']:11.0f} {r['peak_rss_mb']:12.0f}")
    print(f"speed-up of instructerc over the plain Trainer: {results[1]['examples_per_s'] / results[0]['examples_per_s']:.2f}x")


if __name__ == "__main__":
    main()
