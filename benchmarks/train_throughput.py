"""Training throughput: instructerc's loop against a plain transformers.Trainer, per template and precision.

Every variant trains the same LoRA (the paper's: r=16, alpha=16, dropout 0.05 on q/k/v of every
layer) on the same examples (a fixed slice of MELD train), with the same global batch and
learning rate, at the same precision:

``trainer``      transformers.Trainer, as a plain setup runs it: each random batch padded to its
                 longest example, the vocabulary projected at every position (``bf16=True`` where
                 the precision is bfloat16).
``ours``         instructerc's step: each step's prompts packed as prefix trees, the vocabulary
                 projected only at target positions, LoRA dropout masks from random words on a CPU
                 (``modeling.word_dropout``; bf16 autocast where the precision is bfloat16).
``ours-sparse``  the same with block-sparse attention over the packed rows (``packing.block_sparse_attention``).

In every variant the frozen base weights are stored in the compute type and the LoRA weights and
their optimizer state in float32, so the ratios compare methods, not precisions.

Templates: ``instructerc`` (the paper's retrieval template) and ``dialogue-stream`` (the default
model's: every prompt of a dialogue is a prefix of the next).

Figures per variant: data tokens/s (the examples' own tokens, unpacked and unpadded: the same data
for every variant), computed tokens/s (what the variant ran: packed rows, or padded batches),
peak RSS, and MFU: the FLOPs of the computed tokens (forward, and backward through the frozen
layers: 4 per weight of the decoder's matrices and of the vocabulary projection where it runs)
over a peak measured here, in the same run, as the best matrix product of the model's shapes in
fp32 and in bf16. Each variant runs in its own process so its peak memory is its own.

    python benchmarks/train_throughput.py --data ../shared/data
    python benchmarks/train_throughput.py --data ../shared/data --templates dialogue-stream --dtypes bfloat16 --json out.json

``--profile-steps N`` profiles N more steps of our variants by operator (``torch.profiler``) and
prints, for each that ran in both precisions, the operators fp32 and bf16 spend their time in and
what bf16 could gain if only the matrix products were faster:

    python benchmarks/train_throughput.py --data ../shared/data --templates dialogue-stream --variants ours --profile-steps 6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _report import check_meld, input_errors_to, non_negative_int, output_file, positive_int, write_json

TEMPLATES = ("instructerc", "dialogue-stream")
DTYPES = ("float32", "bfloat16")
VARIANTS = ("trainer", "ours", "ours-sparse")


def template_config(name: str):
    from instructerc.prompts.templates import TemplateConfig

    if name == "dialogue-stream":
        # As the default model's recipe: no demonstration, history dropped 16 utterances at a time.
        return TemplateConfig(name="dialogue-stream", demonstration=False, history_stride=16)
    return TemplateConfig()


def build_examples(data: Path, template: str, dialogues: int, pool_dialogues: int | None, max_length: int, model: str):
    from instructerc.data.registry import DataSource, label_set_of, load_dialogues
    from instructerc.modeling.backbone import BackboneConfig, load_tokenizer, resolve_model
    from instructerc.prompts.encoding import SegmentTokenizer
    from instructerc.prompts.example import Task
    from instructerc.prompts.setup import PromptSetup
    from instructerc.retrieval.index import RetrievalConfig

    source = DataSource("meld", data)
    train = load_dialogues(source, "train")
    chosen = train[:dialogues]
    setup = PromptSetup(template_config(template), label_set_of(source), max_length, RetrievalConfig())
    demonstrations = {}
    if setup.uses_demonstrations:
        from instructerc.retrieval.retriever import DemonstrationRetriever

        pool = train[:pool_dialogues] if pool_dialogues else train
        demonstrations = DemonstrationRetriever.build(pool, setup.retrieval).demonstrations(chosen, training=True)
    path = resolve_model(BackboneConfig(model=model))
    tokenizer = load_tokenizer(path)
    examples = setup.encode(list(setup.builder(demonstrations).examples(Task.ERC, chosen, training=True)), SegmentTokenizer(tokenizer))
    return examples, tokenizer, path


def lora_model(path: str, dtype: str):
    """The paper's LoRA over a frozen base stored in ``dtype`` (peft keeps the adapters float32)."""
    from peft import LoraConfig, get_peft_model

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm

    model = load_causal_lm(path, BackboneConfig(model=path), "cpu", dtype)
    return get_peft_model(
        model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj"], task_type="CAUSAL_LM")
    )


def matmul_weights(model) -> tuple[int, int]:
    """(weights of the decoder's matrices, weights of the vocabulary projection)."""
    import torch

    from instructerc.modeling.wrappers import underlying_model

    base = underlying_model(model)
    head = base.get_output_embeddings().weight.numel()
    decoder = sum(m.weight.numel() for m in base.get_decoder().modules() if isinstance(m, torch.nn.Linear))
    return decoder, head


def run_ours(examples, tokenizer, path, dtype: str, sparse: bool, batch_size: int, steps: int, profile_steps: int = 0) -> dict:
    import torch
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    from instructerc.modeling.precision import mixed_precision
    from instructerc.modeling.sparse_attention import use_block_sparse_attention, use_causal_sdpa_attention
    from instructerc.modeling.word_dropout import use_word_dropout
    from instructerc.training.batches import collate, epoch_order
    from instructerc.training.config import OptimConfig, PackingConfig, TrainConfig
    from instructerc.training.trainer import Trainer

    torch.manual_seed(0)
    model = lora_model(path, dtype)
    use_word_dropout(model)  # as make_trainable does for the trainer
    # As the trainer does: block-sparse attention where asked, else SDPA with is_causal on chain rows.
    if sparse:
        use_block_sparse_attention(model)
    else:
        use_causal_sdpa_attention(model)
    config = TrainConfig(
        optim=OptimConfig(lr=2e-4, batch_size=batch_size, micro_batch_size=batch_size), packing=PackingConfig(block_sparse_attention=sparse)
    )
    trainer = Trainer(config, progress=False)
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision(dtype, "cpu"))
    model = accelerator.prepare(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, betas=(0.9, 0.95))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps + 1)
    order = epoch_order(examples, 0, by_dialogue=True)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    decoder, head = matmul_weights(model)
    timings = []
    for step in range(steps + 1):
        batch = batches[step % len(batches)]
        started = time.perf_counter()
        _, computed = trainer._step(model, optimizer, scheduler, accelerator, examples, batch, 0, 1, tokenizer.pad_token_id)
        seconds = time.perf_counter() - started
        targets = int(collate([examples[i] for i in batch], tokenizer.pad_token_id, config.packing.max_tokens, True).keep.numel())
        if step:  # the first step warms up allocators and kernels
            timings.append((seconds, sum(len(examples[i]) for i in batch), computed, 4 * (decoder * computed + head * targets), len(batch)))
    result = summarize(timings)
    if profile_steps:
        # After the timed steps, so the profiler's own cost is in none of them.
        step_of = lambda batch: trainer._step(model, optimizer, scheduler, accelerator, examples, batch, 0, 1, tokenizer.pad_token_id)  # noqa: E731
        result["ops"] = profiled_ops(step_of, [batches[(steps + 1 + k) % len(batches)] for k in range(profile_steps)])
    return result


def profiled_ops(step, batches: list) -> dict:
    """Seconds a step spends in each operator (self CPU time, from ``torch.profiler``), and the
    wall seconds a step takes under the profiler, averaged over ``batches``."""
    import torch

    started = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for batch in batches:
            step(batch)
    wall = (time.perf_counter() - started) / len(batches)
    per_op = {event.key: event.self_cpu_time_total / 1e6 / len(batches) for event in profile.key_averages()}
    return {"wall_seconds_per_step": wall, "self_seconds_per_step": {k: v for k, v in per_op.items() if v > 0}}


def run_trainer(examples, tokenizer, path, dtype: str, batch_size: int, steps: int, output: Path) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = lora_model(path, dtype)
    decoder, head = matmul_weights(model)
    rows = [
        {"input_ids": list(e.input_ids), "attention_mask": [1] * len(e), "labels": [-100] * len(e.prompt_ids) + list(e.target_ids)}
        for e in examples
    ]
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    batches: list[tuple[int, int, int]] = []  # per collated batch: data tokens, padded tokens, examples

    def collator(features):
        batch = pad(features)
        batches.append((int(batch["attention_mask"].sum()), int(batch["input_ids"].numel()), len(features)))
        return batch

    timings: list[tuple[float, int, int, int, int]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            data, padded, count = batches[len(timings)]
            timings.append((time.perf_counter() - self.started, data, padded, 4 * (decoder + head) * padded, count))

    arguments = TrainingArguments(
        output_dir=str(output),
        per_device_train_batch_size=batch_size,
        learning_rate=2e-4,
        adam_beta2=0.95,
        max_steps=steps + 1,
        lr_scheduler_type="linear",
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=dtype == "bfloat16",
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, data_collator=collator, callbacks=[Timer()])
    trainer.train()
    if len(timings) < 2:
        raise RuntimeError(f"the Trainer ran {len(timings)} timed steps")
    return summarize(timings[1:])


def summarize(timings: list[tuple[float, int, int, int, int]]) -> dict:
    if not timings:
        raise RuntimeError("no step was timed")
    seconds = sum(t[0] for t in timings)
    return {
        "steps": len(timings),
        "seconds": seconds,
        "examples_per_s": sum(t[4] for t in timings) / seconds,
        "data_tokens_per_s": sum(t[1] for t in timings) / seconds,
        "computed_tokens_per_s": sum(t[2] for t in timings) / seconds,
        "flops_per_s": sum(t[3] for t in timings) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def matmul_peaks(path: str) -> dict[str, float]:
    """The best FLOP/s of the model's matrix products (1,024 tokens by each weight shape), per precision."""
    import torch

    from instructerc.modeling.backbone import BackboneConfig, load_causal_lm

    model = load_causal_lm(path, BackboneConfig(model=path), "cpu", "float32")
    shapes = sorted({tuple(m.weight.shape) for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)})
    peaks = {}
    for dtype in DTYPES:
        best = 0.0
        for out_features, in_features in shapes:
            x = torch.randn(1024, in_features, dtype=getattr(torch, dtype))
            w = torch.randn(in_features, out_features, dtype=getattr(torch, dtype))
            for _ in range(3):
                x @ w
            repeats, started = 20, time.perf_counter()
            for _ in range(repeats):
                x @ w
            best = max(best, 2 * 1024 * in_features * out_features * repeats / (time.perf_counter() - started))
        peaks[dtype] = best
    return peaks


def child(args: argparse.Namespace) -> None:
    import tempfile

    if args.variant == "peaks":
        from instructerc.modeling.backbone import BackboneConfig, resolve_model

        print("RESULT " + json.dumps(matmul_peaks(resolve_model(BackboneConfig(model=args.model)))))
        return
    examples, tokenizer, path = build_examples(args.data, args.template, args.dialogues, args.pool_dialogues, args.max_length, args.model)
    if args.variant == "trainer":
        with tempfile.TemporaryDirectory(prefix="train-throughput-") as output:
            result = run_trainer(examples, tokenizer, path, args.dtype, args.batch_size, args.steps, Path(output))
    else:
        sparse = args.variant == "ours-sparse"
        result = run_ours(examples, tokenizer, path, args.dtype, sparse, args.batch_size, args.steps, args.profile_steps)
    result.update(examples=len(examples), mean_example_tokens=sum(len(e) for e in examples) / len(examples))
    print("RESULT " + json.dumps(result))


def run_child(args: argparse.Namespace, **choice: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--data",
        str(args.data),
        "--model",
        args.model,
        "--dialogues",
        str(args.dialogues),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--max-length",
        str(args.max_length),
        "--profile-steps",
        str(args.profile_steps),
    ]
    if args.pool_dialogues:
        command += ["--pool-dialogues", str(args.pool_dialogues)]
    for key, value in choice.items():
        command += [f"--{key}", value]
    done = subprocess.run(command, capture_output=True, text=True)
    line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"{choice} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The data, the slice and the model, checked before the first of the processes starts."""
    from transformers import AutoConfig

    from instructerc.data.registry import DataSource, load_dialogues
    from instructerc.modeling.backbone import BackboneConfig, resolve_model

    check_meld(parser, args.data, "train")
    available = len(load_dialogues(DataSource("meld", args.data), "train"))
    for option, count in (("--dialogues", args.dialogues), ("--pool-dialogues", args.pool_dialogues)):
        if count is not None and count > available:
            parser.error(f"argument {option}: MELD train has {available} dialogues, not {count}")
    with input_errors_to(parser, "--model"):
        path = resolve_model(BackboneConfig(model=args.model))
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:  # a hub id that is not in the cache, or a folder without a model
        parser.error(f"argument --model: {args.model}: {str(error).splitlines()[0]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="backbone (default: the embedded model)")
    parser.add_argument("--templates", nargs="+", choices=TEMPLATES, default=list(TEMPLATES))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--dialogues", type=positive_int, default=16, help="the first N MELD training dialogues are the slice")
    parser.add_argument(
        "--pool-dialogues", type=positive_int, help="demonstrations come from the first N training dialogues (default: all)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--steps", type=positive_int, default=8, help="timed steps (after one warm-up step)")
    parser.add_argument("--max-length", type=positive_int, default=1024)
    parser.add_argument(
        "--profile-steps",
        type=non_negative_int,
        default=0,
        help="also profile N more steps of our variants by operator, and compare the precisions op by op (default 0: no profile)",
    )
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    parser.add_argument("--variant", choices=VARIANTS + ("peaks",), help=argparse.SUPPRESS)
    parser.add_argument("--template", choices=TEMPLATES, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=DTYPES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        with input_errors_to(parser):
            child(args)
        return
    check_options(parser, args)
    peaks = run_child(args, variant="peaks")
    print(f"matrix-product peak at the model's shapes: fp32 {peaks['float32'] / 1e9:.0f} GFLOPS, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOPS")
    rows = []
    header = (
        f"{'template':16} {'precision':9} {'variant':12} {'examples/s':>10} {'data tok/s':>10} {'comp tok/s':>10} "
        f"{'MFU':>6} {'peak RSS MB':>11}"
    )
    print(header)
    for template in args.templates:
        for dtype in args.dtypes:
            for variant in args.variants:
                r = run_child(args, variant=variant, template=template, dtype=dtype)
                r.update(template=template, dtype=dtype, variant=variant, mfu=r["flops_per_s"] / peaks[dtype])
                rows.append(r)
                print(
                    f"{template:16} {dtype:9} {variant:12} {r['examples_per_s']:10.2f} {r['data_tokens_per_s']:10.0f} "
                    f"{r['computed_tokens_per_s']:10.0f} {r['mfu']:6.1%} {r['peak_rss_mb']:11.0f}",
                    flush=True,
                )
    print()
    find = {(r["template"], r["dtype"], r["variant"]): r for r in rows}
    for template in args.templates:
        for dtype in args.dtypes:
            base = find.get((template, dtype, "trainer"))
            for variant in ("ours", "ours-sparse"):
                mine = find.get((template, dtype, variant))
                if base and mine:
                    print(f"{template} {dtype}: {variant} / Trainer = {mine['data_tokens_per_s'] / base['data_tokens_per_s']:.2f}x")
        for variant in VARIANTS:
            low, high = find.get((template, "float32", variant)), find.get((template, "bfloat16", variant))
            if low and high:
                print(f"{template} {variant}: bf16 / fp32 = {high['data_tokens_per_s'] / low['data_tokens_per_s']:.2f}x")
    for template in args.templates:
        for variant in ("ours", "ours-sparse"):
            low, high = find.get((template, "float32", variant)), find.get((template, "bfloat16", variant))
            if low and high and "ops" in low and "ops" in high:
                print_op_comparison(f"{template} {variant}", low["ops"], high["ops"])
    if args.json:
        write_json(args.json, {"peaks_flops_per_s": peaks, "rows": rows}, args, skip=("variant", "template", "dtype"))


# The operators of the matrix products a step computes (forward and backward of every linear layer).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")


def print_op_comparison(name: str, fp32: dict, bf16: dict, top: int = 10) -> None:
    """Per step, the operators that take the most time in either precision, fp32 against bf16,
    and what bf16 could gain at most if only the matrix products changed: the step's fp32 time
    with their fp32 seconds replaced by their bf16 seconds."""
    a, b = fp32["self_seconds_per_step"], bf16["self_seconds_per_step"]
    ops = sorted(set(a) | set(b), key=lambda op: -(a.get(op, 0.0) + b.get(op, 0.0)))[:top]
    print(f"\n{name}: seconds per step by operator (self CPU time, torch.profiler)")
    print(f"{'operator':60} {'fp32':>8} {'bf16':>8} {'fp32/bf16':>9}")
    for op in ops:
        ratio = a.get(op, 0.0) / b[op] if b.get(op) else float("nan")
        print(f"{op[:60]:60} {a.get(op, 0.0):8.3f} {b.get(op, 0.0):8.3f} {ratio:9.2f}")
    mm_a, mm_b = (sum(t.get(op, 0.0) for op in MATMUL_OPS) for t in (a, b))
    wall_a, wall_b = fp32["wall_seconds_per_step"], bf16["wall_seconds_per_step"]
    bound = wall_a / (wall_a - mm_a + mm_b) if wall_a - mm_a + mm_b > 0 else float("nan")
    print(
        f"step under the profiler: fp32 {wall_a:.3f} s, bf16 {wall_b:.3f} s ({wall_a / wall_b:.2f}x); matrix products "
        f"{mm_a:.3f} s against {mm_b:.3f} s ({mm_a / mm_b if mm_b else float('nan'):.2f}x), "
        f"{mm_a / wall_a:.0%} of the fp32 step: if only they were faster, bf16 would be {bound:.2f}x fp32"
    )


if __name__ == "__main__":
    main()
