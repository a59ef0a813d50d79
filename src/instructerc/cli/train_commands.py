"""``instructerc train RECIPE.yaml``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from instructerc.cli.options import add_dtype_option


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="fine-tune an LLM on a recipe (YAML)")
    train.add_argument("recipe", type=Path, help="a recipe YAML, e.g. recipes/smollm2-135m-meld-cpu.yaml")
    # Kept a string: Path("") is ".", which would turn an empty --output into the working directory.
    train.add_argument("--output", help="run directory (overrides output_dir); the model lands in OUTPUT/model")
    train.add_argument("--data", help="data path (overrides data.path)")
    train.add_argument("--data-fraction", type=float, help="train on this stratified fraction of the training dialogues")
    train.add_argument("--seed", type=int, help="random seed (data order, sampling, initialisation)")
    train.add_argument("--model", help="backbone: a local path or hub id (overrides backbone.model)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe key, e.g. --set optim.lr=1e-4 (YAML value)"
    )
    add_dtype_option(train, "of the matrix products (overrides backbone.dtype; trainable weights stay float32)")
    train.add_argument(
        "--strategy",
        choices=("ddp", "fsdp"),
        help="with several processes: ddp (a whole model per process) or fsdp (FSDP2, sharded); overrides distributed.strategy",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in the output directory from its last checkpoint")
    train.add_argument(
        "--force", action="store_true", help="with --resume: continue even though the recipe differs from the one the run started with"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=run_training)


def overrides_from(args: argparse.Namespace) -> dict:
    overrides = {}
    for item in args.set:
        key, value = set_override(item)
        overrides[key] = value
    for key, value in (
        ("output_dir", args.output),
        ("data.path", args.data),
        ("data.fraction", args.data_fraction),
        ("seed", args.seed),
        ("backbone.model", args.model),
        ("backbone.dtype", args.dtype),
        ("distributed.strategy", args.strategy),
    ):
        if value is not None:
            overrides[key] = str(value) if isinstance(value, Path) else value
    return overrides


def set_override(item: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``: the value is read as YAML, like the recipe it overrides."""
    import yaml

    from instructerc.config import parse_yaml
    from instructerc.errors import InputError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects KEY=VALUE, got '{item}'", field="--set")
    try:
        return key, parse_yaml(value)
    except yaml.YAMLError as error:
        # The parser's own message spans lines (it quotes the text): its first line says enough.
        problem = str(getattr(error, "problem", None) or error).splitlines()[0]
        raise InputError(f"--set {key}: '{value}' is not a YAML value ({problem})", field="--set") from None


def run_training(args: argparse.Namespace) -> int:
    from instructerc.errors import InputError
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.training.config import TrainConfig
    from instructerc.training.trainer import Trainer

    if args.force and not args.resume:
        raise InputError("--force only applies with --resume", field="force")
    config = TrainConfig.from_yaml(args.recipe, overrides_from(args))
    result = Trainer(config, progress=not args.no_progress, force=args.force, dev_scoring=predictor_dev_scoring).run(resume=args.resume)
    if result.main_process and result.best_dev_score is not None:
        print(f"best dev score {result.best_dev_score:.2f} (step {result.best_step}); model written to {result.model_dir}")
    return 0
