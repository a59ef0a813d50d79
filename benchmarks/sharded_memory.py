"""Memory per process of data-parallel (DDP) and sharded (FSDP2) training, on the same run.

Each strategy trains the same config for a few steps in its own ``torchrun`` of N CPU processes
(gloo) and reports what the trainer logs after its first step: the bytes of parameters and of
AdamW state each process holds (under FSDP its shards), and each process's peak resident memory.
The default config is full fine-tuning of the embedded SmolLM2-135M (every weight trainable, so
the optimizer state is as large as it gets), where FSDP should hold about 1/N of DDP's.

    python benchmarks/sharded_memory.py --data ../shared/data
    python benchmarks/sharded_memory.py --data ../shared/data --method lora --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import (  # noqa: E402
    existing_file,
    fraction,
    input_errors_to,
    output_file,
    positive_float,
    positive_int,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def overrides_of(args: argparse.Namespace) -> dict[str, object]:
    """The recipe keys every run sets (as ``--set KEY=VALUE``, values read as YAML)."""
    return {
        "finetune.method": args.method,
        # The recipe's LoRA settings, which full fine-tuning refuses rather than ignores.
        **({"finetune.lora": "null"} if args.method == "full" else {}),
        "data.fraction": args.fraction,
        "data.max_dev_dialogues": 1,
        "stages": f"[{{tasks: {{erc: 1.0}}, epochs: {args.epochs}}}]",
        "optim.batch_size": args.batch_size,
        "optim.micro_batch_size": args.micro_batch_size,
        "checkpoint_every_steps": 100000,
    }


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The recipe as the runs override it, and its data, checked before the first run starts
    (a bad value otherwise ends the first torchrun with every process's traceback)."""
    from instructerc.cli.train_commands import set_override
    from instructerc.data.registry import load_dialogues
    from instructerc.training.config import TrainConfig

    if args.batch_size < args.processes:
        parser.error(f"argument --batch-size: {args.batch_size} examples per step cannot give each of --processes {args.processes} one")
    with input_errors_to(parser, "--recipe"):
        overrides = dict(set_override(f"{key}={value}") for key, value in overrides_of(args).items())
        config = TrainConfig.from_yaml(args.recipe, {**overrides, "data.path": str(args.data)})
    with input_errors_to(parser, "--data"):
        for split in ("train", "dev"):
            load_dialogues(config.data.source(), split)


def train(strategy: str, args: argparse.Namespace, run: Path, port: int) -> dict:
    """One short run; its memory record and step times."""
    overrides = overrides_of(args)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes), "--master_port", str(port)]
    command += ["-m", "instructerc", "train", str(args.recipe), "--strategy", strategy, "--output", str(run), "--data", str(args.data)]
    command += ["--dtype", args.dtype, "--no-progress"]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{strategy} run failed:\n{done.stderr[-3000:]}")
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    memory = next(r for r in log if r["event"] == "memory")["per_process"]
    steps = [r for r in log if r["event"] == "step"]
    start = next(r for r in log if r["event"] == "start")
    return {
        "strategy": strategy,
        "processes": start["processes"],
        "parameters": start["parameters"],
        "trainable_parameters": start["trainable_parameters"],
        "precision": start["precision"],
        "per_process": memory,
        "steps": len(steps),
        "mean_step_seconds": sum(r["tokens"] / r["tokens_per_s"] for r in steps[1:]) / max(1, len(steps) - 1),
        "wall_seconds": wall,
    }


def print_table(results: list[dict]) -> None:
    print(f"{'strategy':<9}{'process':>8}{'params MB':>11}{'optim MB':>10}{'params+optim MB':>17}{'peak RSS MB':>13}{'s/step':>8}")
    for result in results:
        for rank, memory in enumerate(result["per_process"]):
            held = memory["parameter_bytes"] + memory["optimizer_bytes"]
            print(
                f"{result['strategy']:<9}{rank:>8}{memory['parameter_bytes'] / MB:>11.1f}{memory['optimizer_bytes'] / MB:>10.1f}"
                f"{held / MB:>17.1f}{memory['peak_rss_bytes'] / MB:>13.0f}{result['mean_step_seconds']:>8.2f}"
            )
    by = {r["strategy"]: r for r in results}
    if {"ddp", "fsdp"} <= set(by):

        def held(result: dict) -> float:
            return max(m["parameter_bytes"] + m["optimizer_bytes"] for m in result["per_process"])

        print(f"FSDP/DDP parameters+optimizer per process: {held(by['fsdp']) / held(by['ddp']):.3f}")
        peak = [max(m["peak_rss_bytes"] for m in by[s]["per_process"]) for s in ("fsdp", "ddp")]
        print(f"FSDP/DDP peak RSS per process: {peak[0] / peak[1]:.3f}")


def main(argv: list[str] | None = None) -> None:
    from instructerc.modeling.precision import DTYPES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--recipe", type=existing_file, default=ROOT / "recipes" / "smollm2-135m-meld-cpu.yaml")
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--processes", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=1, help="OMP threads per process")
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--fraction", type=fraction, default=0.02, help="of MELD's training dialogues")
    parser.add_argument("--epochs", type=positive_float, default=0.2)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--micro-batch-size", type=positive_int, default=4)
    parser.add_argument("--strategies", nargs="+", choices=("ddp", "fsdp"), default=["ddp", "fsdp"])
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    check_options(parser, args)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for offset, strategy in enumerate(args.strategies):
            results.append(train(strategy, args, Path(scratch) / strategy, 29400 + (os.getpid() + offset) % 500))
    print_table(results)
    if args.json:
        write_json(args.json, {"runs": results}, args)


if __name__ == "__main__":
    main()
