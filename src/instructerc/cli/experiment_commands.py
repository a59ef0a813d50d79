"""``instructerc experiment GRID.yaml``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from instructerc.cli.options import MACHINE_ERRNOS, add_dtype_option, check_input_file, output_error, output_folder, path_arg
from instructerc.cli.process_group import end_process_group, exit_group_member, joined_shard


def register(commands: argparse._SubParsersAction) -> None:
    experiment = commands.add_parser("experiment", help="run a grid of trainings and collect a results table")
    experiment.add_argument("grid", type=path_arg, help="an experiment YAML, e.g. experiments/data-scaling-cpu.yaml")
    experiment.add_argument(
        "--results", type=output_folder, help="where the CSV, Markdown table and plot go (default: the grid's output_dir)"
    )
    experiment.add_argument(
        "--only",
        metavar="TEXT",
        action="append",
        help="run (or --list) only the runs whose name contains TEXT (repeat it for runs matching any); "
        "the report keeps every finished run",
    )
    experiment.add_argument("--list", action="store_true", help="list the runs and whether each is done, then stop")
    experiment.add_argument("--report-only", action="store_true", help="collect the finished runs into the report without training")
    experiment.add_argument("--no-progress", action="store_true")
    add_dtype_option(experiment, "of every run, training and evaluation (overrides backbone.dtype)")
    experiment.set_defaults(handler=run_experiment)


def run_experiment(args: argparse.Namespace) -> int:
    """Under a launcher (``accelerate launch ... experiment``), every process runs the grid and
    the runs' trainings share the processes; an error they all meet (a bad grid, --only, a missing
    backbone, runs that failed alike) is said by the first process alone, as train does, and the
    report is the first process's to write."""
    from instructerc.extras import require_extra

    # Even --list: a run's folder name depends on the dtype torch resolves for this machine.
    require_extra("experiment", "train")
    from instructerc.distributed import check_lone_local_rank
    from instructerc.inference.sharding import done_alike

    shard = joined_shard()
    if shard.world == 1:
        check_lone_local_rank()
    try:
        config, root, specs = done_alike(shard, lambda: checked_grid(args), args.grid, lost="no run was trained")
        if args.list:
            if shard.main:
                list_runs(config, root, specs)
        else:
            _run_and_report(args, config, root, shard)
    finally:
        in_group = end_process_group()  # once, after every run: the runs share it
    if in_group:
        exit_group_member(0)
    return 0


def checked_grid(args: argparse.Namespace) -> tuple[Any, Path, list[Any]]:
    """The grid with the command line's options, checked before any run: its config, the folder
    its paths are relative to, and the runs chosen (by --only)."""
    from instructerc.errors import InputError
    from instructerc.experiments.grid import expand, load_experiment
    from instructerc.experiments.runner import check_output_folder, selected

    check_options(args)
    check_input_file(args.grid, "the grid")
    if args.results is not None:
        check_output_folder(args.results, field="results", what="its report", named="--results folder")
    config, root = load_experiment(args.grid)
    if args.dtype:
        config = replace(config, overrides={**config.overrides, "backbone.dtype": args.dtype})
    specs = expand(config)
    if args.only is not None:
        # Each TEXT must match: a typo in one of several would otherwise go unnoticed.
        names = ", ".join(spec.name for spec in specs)
        for text in dict.fromkeys(args.only):
            if not any(text in spec.name for spec in specs):
                raise InputError(f"no run of the grid has '{text}' in its name (runs: {names})", path=args.grid, field="only")
        specs = [spec for spec in specs if selected(spec.name, args.only)]
    if not args.list and not args.report_only:
        check_run_models(config, root, specs, args.grid)
        check_output_folder(root / config.output_dir)
    return config, root, specs


def list_runs(config: Any, root: Path, specs: list[Any]) -> None:
    from instructerc.experiments.runner import run_directory, run_state

    directories = [run_directory(config, root, spec) for spec in specs]
    # "to score": trained, but not scored on this grid's split and subset (yet).
    states = [run_state(config, directory) for directory in directories]
    width = max((len(state) for state in states), default=0)
    for spec, directory, state in zip(specs, directories, states):
        print(f"{state:<{max(width, 8)}} {directory.name} {spec.name}")


def _run_and_report(args: argparse.Namespace, config: Any, root: Path, shard: Any) -> None:
    """Trains the chosen runs (unless --report-only), then the report and the failed runs, said
    once across processes: each process met the same runs' failures."""
    from instructerc.experiments.runner import run_grid
    from instructerc.inference.sharding import done_alike

    failures = []
    if not args.report_only:
        # Progress bars of the first process alone: every process trains each run, the first scores it.
        progress = not args.no_progress and shard.main
        failures = run_grid(config, root, progress=progress, only=args.only).failures

    def report() -> None:
        if shard.main:
            write_grid_report(args, config, root, failures)
        refuse_failures(failures, args.grid)

    done_alike(shard, report, args.grid, lost="the grid did not finish")


def write_grid_report(args: argparse.Namespace, config: Any, root: Path, failures: list[Any]) -> None:
    """The report of the grid, whichever runs --only ran now: every run with a result scored the
    way this grid scores (another grid's scores of a shared run are on another split or subset)."""
    from instructerc.errors import InputError
    from instructerc.experiments.grid import expand
    from instructerc.experiments.report import write_report
    from instructerc.experiments.runner import RESULT_FILE, Scoring, load_result, run_directory

    scoring = Scoring.of(config)
    # A run that failed just now is reported as failed, not read: its result may be what failed.
    failed = {failure.name for failure in failures}
    found = [load_result(run_directory(config, root, s) / RESULT_FILE, s, scoring) for s in expand(config) if s.name not in failed]
    results = [result for result in found if result is not None]
    target = args.results or (root / config.output_dir)
    try:
        written = write_report(config, results, target, failures)
    except OSError as error:
        if error.errno in MACHINE_ERRNOS:  # a full disk: the machine's failure, not the folder given
            raise output_error(error, Path(error.filename or target)) from None
        # Named as the user gave the folder: without --results it is the grid's output_dir.
        option = "results" if args.results else "output_dir"
        raise InputError(f"cannot write the report: {error.strerror or error}", path=target, field=option) from None
    for path in written:
        print(f"wrote {path}")


def refuse_failures(failures: list[Any], grid: Path) -> None:
    """Called after the report, which holds every run that did finish: the exit status and this
    line say the grid is not complete, and which runs failed with what."""
    from instructerc.errors import InputError

    if failures:
        shown = "; ".join(f"{failure.name}: {failure.message}" for failure in failures)
        raise InputError(f"{len(failures)} run(s) of the grid failed ({shown}); the others ran", path=grid)


def check_options(args: argparse.Namespace) -> None:
    """Refuses options that the chosen action would ignore without a word."""
    from instructerc.errors import InputError

    if args.list and (args.report_only or args.results is not None):
        ignored = "--report-only" if args.report_only else "--results"
        raise InputError(f"--list only lists the runs: it writes no report, so {ignored} has nothing to do", field="list")
    if args.report_only and args.only is not None:
        raise InputError("--report-only reports every finished run: --only chooses runs to train or list", field="only")
    if args.only is not None and not all(text.strip() for text in args.only):
        # Every name contains the empty text: an unset variable in --only "$RUN" would train them all.
        raise InputError("an empty TEXT matches every run", field="only")


def check_run_models(config: Any, root: Path, specs: list[Any], grid: Path) -> None:
    """Refuses, before the first run, a run whose backbone (a missing folder, a hub id the hub
    cannot give) or init_adapter (another backbone's, no adapter) cannot be had: the grid would
    otherwise stop at that run after training the runs before it, and the error would not say
    which run of which grid."""
    from instructerc.errors import InputError
    from instructerc.experiments.runner import resolved_config
    from instructerc.modeling.backbone import check_hub_model, check_model_folder
    from instructerc.modeling.model_dir import check_adapter_backbone

    checked: set[tuple[str, str | None]] = set()
    for spec in specs:
        train = resolved_config(config, root, spec)
        model, adapter = train.backbone.model, train.finetune.init_adapter
        if (model, adapter) in checked:
            continue
        checked.add((model, adapter))
        try:
            check_model_folder(model)
            check_hub_model(model)
            if adapter is not None:
                check_adapter_backbone(adapter, model)
        except InputError as error:
            raise InputError(f"run {spec.name}: {error.message}", path=error.path or grid, line=error.line, field=error.field) from None
