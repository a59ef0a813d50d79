"""``instructerc train RECIPE.yaml``."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from instructerc.cli.options import add_dtype_option, check_input_file, nonempty_path_text, output_folder_text, path_arg
from instructerc.cli.process_group import end_process_group, exit_group_member, joined_shard
from instructerc.distributed import SAME_FAILURE_SECONDS, interruptible_rendezvous
from instructerc.errors import InputError


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="fine-tune an LLM on a recipe (YAML)")
    train.add_argument("recipe", type=path_arg, help="a recipe YAML, e.g. recipes/smollm2-135m-meld-cpu.yaml")
    # Kept strings (recipe values), but never empty: an unset variable (--data "$DATA") would
    # otherwise name the working directory, or read as "not given".
    train.add_argument("--output", type=output_folder_text, help="run directory (overrides output_dir); the model lands in OUTPUT/model")
    train.add_argument("--data", type=nonempty_path_text, help="data path (overrides data.path)")
    train.add_argument("--data-fraction", type=float, help="train on this stratified fraction of the training dialogues")
    train.add_argument("--seed", type=int, help="random seed (data order, sampling, initialisation)")
    train.add_argument("--model", type=nonempty_path_text, help="backbone: a local path or hub id (overrides backbone.model)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe key, e.g. --set optim.lr=1e-4 or --set stages[1].epochs=2 (YAML value; "
        "a mapping merges into the section: --set 'optim={lr: 1e-4}' keeps the other optim keys)",
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
    return {key: value for key, value, _ in given_overrides(args)}


def given_overrides(args: argparse.Namespace) -> list[tuple[str, Any, str]]:
    """The recipe keys the command line sets: (key, value, the option as typed), later ones winning."""
    given = []
    for item in args.set:
        key, value = set_override(item)
        given.append((key, value, shlex.join(["--set", item])))
    for key, flag, value in (
        ("output_dir", "--output", args.output),
        ("data.path", "--data", args.data),
        ("data.fraction", "--data-fraction", args.data_fraction),
        ("seed", "--seed", args.seed),
        ("backbone.model", "--model", args.model),
        ("backbone.dtype", "--dtype", args.dtype),
        ("distributed.strategy", "--strategy", args.strategy),
    ):
        if value is not None:
            given.append((key, str(value) if isinstance(value, Path) else value, shlex.join([flag, str(value)])))
    refuse_contradictions(given)
    return given


def refuse_contradictions(given: list[tuple[str, Any, str]]) -> None:
    """Two options giving one field different values (``--set seed=3 --seed 4``, ``--set
    stages[0].epochs=2 --set stages.0.epochs=3``) are refused: one of them would be dropped
    without a word, and which one depends on an order nobody reads."""
    first: dict[str, tuple[Any, str]] = {}
    for key, value, option in _leaves(given):
        spelling = re.sub(r"\[(\d+)\]", r".\1", key)
        if spelling in first and first[spelling][0] != value:
            raise InputError(f"{first[spelling][1]} and {option} give '{key}' two values; give one", field="set")
        first.setdefault(spelling, (value, option))


def _leaves(given: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
    """Each override, and for a mapping also each field it sets: ``--set 'optim={lr: 1e-4}'``
    gives ``optim.lr`` as ``--set optim.lr=1e-4`` does, and the two must agree. The mapping
    itself stays too: where it replaces (``stages[0].tasks``), two different ones conflict."""
    leaves = []
    for key, value, option in given:
        leaves.append((key, value, option))
        if isinstance(value, dict):
            leaves += _leaves([(f"{key}.{name}", inner, option) for name, inner in value.items()])
    return leaves


def naming_the_option(error: InputError, given: list[tuple[str, Any, str]]) -> InputError:
    """``error`` about the recipe, saying which option gave the field its value: without it,
    ``recipe.yaml: field 'optim': unknown key(s) ['lrr']`` sends the reader to a file that does
    not say ``lrr`` anywhere."""
    # An option that gave the very field first; else one that gave the other field of a check between two.
    for caused in (_caused, _named_beside):
        for key, _, option in reversed(given):
            if option not in error.message and caused(error, _field_name(key)):
                return InputError(f"{error.message} (given by {option})", path=error.path, line=error.line, field=error.field)
    return error


def _field_name(key: str) -> str:
    """An override key named as errors name fields: ``stages.0.epochs`` -> ``stages[0].epochs``."""
    from instructerc.training.config import override_steps, step_names

    return step_names([int(s) if isinstance(s, str) and s.isascii() and s.isdigit() else s for s in override_steps(key)])


def _caused(error: InputError, name: str) -> bool:
    """Whether the override of field ``name`` is what ``error`` is about: its value (or a part of
    it) is wrong, or it is a key that the section ``error`` names does not have."""
    section = error.field or ""
    if error.field is not None and (section == name or section.startswith((name + ".", name + "["))):
        return True
    if not error.message.startswith("unknown key(s)") or (section and not name.startswith(section + ".")):
        return False
    below = re.split(r"[.\[]", name[len(section) :].lstrip("."), maxsplit=1)[0]
    unknown = error.message.split("; known:", 1)[0]
    return f"'{below}'" in unknown


def _named_beside(error: InputError, name: str) -> bool:
    """Whether ``error``, about a field the recipe wrote, names the field ``name`` as the one that
    makes it wrong: ``--set finetune.method=full`` over a recipe's LoRA settings is refused at
    ``finetune.lora.r`` ("r is 2, but finetune.method is full"), and ``--set eval_every_steps=100``
    at the recipe's ``evals_per_epoch``. The message names the field in full, or by its own name
    when both are keys of one section (where that name can mean no other field)."""
    if error.field is None or error.message.startswith("unknown key(s)"):
        return False
    if "." in name and re.search(rf"(?<![\w.\[]){re.escape(name)}(?![\w\[]|\.\w)", error.message):
        return True
    parent, _, own = name.rpartition(".")
    if "[" in own or error.field.rpartition(".")[0] != parent:
        return False
    return re.search(rf"(?<![\w.]){re.escape(own)}(?![\w\[]|\.\w)", error.message) is not None


def set_override(item: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``: the value is read as YAML, like the recipe it overrides."""
    import yaml

    from instructerc.config import parse_yaml

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InputError(f"--set expects KEY=VALUE, got '{item}'", field="set")
    if not value.strip():
        # YAML reads nothing as null, which resets the key to its default: an unset variable
        # (``--set data.path=$DATA``) would silently train on the default data instead.
        raise InputError(f"--set {key}: an empty value (an unset variable?): give a value, or {key}=null to mean none", field="set")
    try:
        return key, parse_yaml(value)
    except yaml.YAMLError as error:
        # The parser's own message spans lines (it quotes the text): its first line says enough.
        problem = str(getattr(error, "problem", None) or error).splitlines()[0]
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InputError(f"--set {key}: '{shown}' is not a YAML value ({problem})", field="set") from None


def say_how_to_resume(output_dir: Path) -> None:
    """A stopped run's way on, where it kept a checkpoint to go on from (said by one process)."""
    from instructerc.distributed import later_process_of_a_run
    from instructerc.training.checkpoint import latest_checkpoint
    from instructerc.training.run_directory import RunPaths

    if later_process_of_a_run():
        return
    latest = latest_checkpoint(RunPaths(output_dir).checkpoints)
    if latest is not None:
        print(f"instructerc: the run is kept up to {latest}; the same command with --resume continues it", file=sys.stderr)


def run_training(args: argparse.Namespace) -> int:
    """Under a launcher, every process checks the recipe and trains; an error they all meet
    (a bad recipe, missing data) is said by the first process alone, as predict does."""
    from instructerc.distributed import check_lone_local_rank
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring  # noqa: F401 - a missing extra is said first
    from instructerc.inference.sharding import done_alike
    from instructerc.training.trainer import Trainer  # noqa: F401 - a missing extra is said first

    shard = joined_shard()
    if shard.world == 1:
        check_lone_local_rank()
    try:
        config = done_alike(shard, lambda: checked_recipe(args), args.recipe, lost="nothing was trained")
        result = _train(args, config, shard)
    finally:
        in_group = end_process_group()
    if result.main_process and result.best_dev_score is not None:
        print(f"best dev score {result.best_dev_score:.2f} (step {result.best_step}); model written to {result.model_dir}")
    if in_group:
        exit_group_member(0)
    return 0


def checked_recipe(args: argparse.Namespace) -> Any:
    """The recipe with the command line's overrides, checked; an error names the option that
    gave a wrong value."""
    from instructerc.modeling.backbone import check_hub_model
    from instructerc.training.config import TrainConfig

    if args.force and not args.resume:
        raise InputError("--force only applies with --resume", field="force")
    check_input_file(args.recipe, "the recipe")
    given = given_overrides(args)
    try:
        config = TrainConfig.from_yaml(args.recipe, {key: value for key, value, _ in given})
        check_hub_model(config.backbone.model)
    except InputError as error:
        raise naming_the_option(error, given) from None
    return config


def _train(args: argparse.Namespace, config: Any, shard: Any) -> Any:
    """Trains ``config``; what every process meets (missing data, a run directory in the way) is
    said once. A process that finds another one gone (killed, or failed on its own) stops with one
    line instead of the backend's traceback."""
    from instructerc.distributed import peer_gone
    from instructerc.evaluation.dev_scoring import predictor_dev_scoring
    from instructerc.inference.sharding import said_once, with_status_group
    from instructerc.training.trainer import Trainer

    with interruptible_rendezvous():
        watched = with_status_group(shard, SAME_FAILURE_SECONDS)
    trainer = Trainer(config, progress=not args.no_progress, force=args.force, dev_scoring=predictor_dev_scoring)
    try:
        return said_once(watched, lambda: trainer.run(resume=args.resume))
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (main's Terminated)
        say_how_to_resume(Path(config.output_dir))
        raise
    except RuntimeError as error:
        if not peer_gone(error):
            raise
        say_how_to_resume(Path(config.output_dir))
        raise InputError(
            "stopped: another process of the run ended before finishing (its error is above, or it was killed)",
            path=config.output_dir,
        ) from None
