"""``instructerc evaluate`` (a model on a benchmark split, or ``--runs`` to aggregate seeds) and
``instructerc baseline`` (majority class and MiniLM + logistic regression in the same harness).

``evaluate`` writes to ``--out`` (default ``MODEL/eval-DATASET-SPLIT``, where a JSONL input's
DATASET is ``jsonl-NAME``, NAME its file's or folder's name, with ``-generate`` or
``-generate-paper-parsing`` appended in generate mode, so the modes never overwrite each other):
``metrics.json``, ``predictions.jsonl``, ``confusion-SYSTEM-DATASET.png`` and ``report.md``.
``evaluate --runs DIR1 DIR2 ...`` reads those folders' metrics.json (one per seed) and prints the
mean and standard deviation per system, dataset and metric; with ``--out`` it also writes
``aggregate.json`` and ``aggregate.md`` there.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from instructerc.cli.options import (
    add_data_options,
    add_dtype_option,
    add_trust_remote_code_option,
    data_source,
    nonempty_path_text,
    output_error,
    output_folder,
    path_arg,
)
from instructerc.data.registry import DataSource

CHUNK_SIZE = 64  # dialogues predicted at a time; --runs refuses any other value it would ignore
DEFAULT_BASELINE_ENCODER = "all-MiniLM-L6-v2"


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="score a model on a dataset split (or aggregate several runs with --runs)")
    evaluate.add_argument(
        "--model",
        type=path_arg,
        metavar="DIR",
        help="a model directory written by 'instructerc train' (default: the model shipped with instructerc)",
    )
    add_data_options(evaluate)
    evaluate.add_argument("--split", help="train, dev or test")
    evaluate.add_argument(
        "--mode", default="score", choices=["score", "generate"], help="score every label (default; never invalid) or generate freely"
    )
    evaluate.add_argument(
        "--paper-parsing",
        action="store_true",
        help="generate mode: snap non-label generations to the closest label (the paper's repair; labelled in the report)",
    )
    evaluate.add_argument(
        "--out",
        type=output_folder,
        metavar="DIR",
        help=(
            "output folder (default MODEL/eval-DATASET-SPLIT; for the shipped model ./eval-default-model-DATASET-SPLIT; "
            "for JSONL, DATASET is jsonl-NAME, NAME the input file's or folder's name; "
            "generate mode appends -generate or -generate-paper-parsing; a default folder holding "
            "another input's evaluation is refused, not overwritten)"
        ),
    )
    evaluate.add_argument(
        "--baselines",
        type=path_arg,
        metavar="DIR",
        help="show the baselines of this folder (written by 'instructerc baseline' on the same split) beside the LLM",
    )
    evaluate.add_argument(
        "--with-baselines", action="store_true", help="train and score the baselines here too (needs the train and dev splits)"
    )
    evaluate.add_argument(
        "--runs",
        nargs="+",
        type=path_arg,
        metavar="DIR",
        help="aggregate these evaluation folders (seeds) into mean and standard deviation instead",
    )
    evaluate.add_argument(
        "--chunk-size", type=int, default=CHUNK_SIZE, metavar="N", help=f"dialogues predicted at a time (default {CHUNK_SIZE})"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_option(evaluate, "the model computes in")
    add_trust_remote_code_option(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    baseline = commands.add_parser("baseline", help="score the majority-class and MiniLM + logistic-regression baselines on a split")
    add_data_options(baseline)
    baseline.add_argument("--split", required=True, help="train, dev or test (C is always chosen on dev)")
    baseline.add_argument(
        "--out",
        type=output_folder,
        required=True,
        metavar="DIR",
        help="output folder: metrics.json, report.md, confusion matrices (a model's evaluation there is refused, not replaced)",
    )
    baseline.add_argument("--only", nargs="+", choices=["majority", "minilm-logreg"], help="run only these baselines (default: both)")
    # Kept as text (a hub id or a folder); an empty one (an unset variable) loaded the working directory.
    baseline.add_argument("--encoder", type=nonempty_path_text, help=f"sentence encoder (default: the embedded {DEFAULT_BASELINE_ENCODER})")
    baseline.add_argument("--c-grid", nargs="+", type=float, metavar="C", help="the logistic regression's C values to choose from on dev")
    baseline.add_argument("--cache-dir", type=path_arg, metavar="DIR", help="embedding cache (default ~/.cache/instructerc)")
    baseline.add_argument("--no-progress", action="store_true", help="no progress bars")
    baseline.set_defaults(handler=run_baseline)


def default_out(model: Path | None, dataset: str, split: str, mode: str, paper_parsing: bool) -> Path:
    """Inside the model directory; for the shipped model (``None``), in the working directory:
    nothing is written into the installed package."""
    suffix = "" if mode == "score" else "-generate" + ("-paper-parsing" if paper_parsing else "")
    what = f"{dataset}-{split}{suffix}"
    return model / f"eval-{what}" if model is not None else Path(f"eval-default-model-{what}")


def dataset_part(source: DataSource) -> str:
    """The DATASET of the default folder's name. A JSONL input is named by its file or folder
    too: under ``jsonl`` alone, evaluating a second JSONL input would overwrite the first's results."""
    from instructerc.evaluation.report import file_part

    if source.name != "jsonl" or source.path is None:
        return source.name
    given = Path(os.path.abspath(source.path))  # '..' by the name of the folder it means, links kept as named
    name = given.stem if given.suffix.lower() == ".jsonl" else given.name
    return f"jsonl-{file_part(name)}" if name else "jsonl"


def refuse_other_input(out: Path, source: DataSource) -> None:
    """An :class:`InputError` when the default folder ``out`` already holds the evaluation of
    another input (another folder of the same name, another label space): it was chosen for the
    user, so it must not silently replace results they did not ask to replace."""
    from instructerc.errors import InputError
    from instructerc.evaluation.results import METRICS_FILE, EvaluationResult

    if not (out / METRICS_FILE).is_file():
        return
    try:
        result = EvaluationResult.load(out)
    except InputError:
        return  # not ours to judge: an unreadable file is no evaluation worth keeping
    # An older folder's relative input path that cannot be made absolute is refused by name:
    # resolved from here, it could name another input than the one it scored.
    recorded = {**result.data, "path": result.input_path(out)}
    if _input_of(recorded) != _input_of(_data_of(source)):
        raise InputError(
            f"holds the evaluation of another input ({_describe(recorded)}); pass --out DIR to write this one elsewhere",
            path=out,
            field="out",
        )


def refuse_baseline_run(out: Path, baselines: Path | None) -> None:
    """An :class:`InputError` when ``out`` holds a baseline run (written by ``instructerc
    baseline``: baselines only) that this evaluation would replace, unless ``--baselines`` names
    that folder, which keeps its baselines beside the model's scores."""
    from instructerc.errors import InputError
    from instructerc.evaluation.results import METRICS_FILE, EvaluationResult, metrics_file

    if not (out / METRICS_FILE).is_file():
        return
    if baselines is not None and metrics_file(baselines).resolve() == (out / METRICS_FILE).resolve():
        return
    try:
        systems = list(EvaluationResult.load(out).systems.values())
    except InputError:
        return  # not ours to judge: an unreadable file is no evaluation worth keeping
    if systems and all(system.kind == "baseline" for system in systems):
        raise InputError(
            "holds the baselines of 'instructerc baseline', which this evaluation would replace: give --out another folder "
            f"(and --baselines {out} to show them beside the model's scores), or --baselines {out} to add the model's scores there",
            path=out,
            field="out",
        )


def _data_of(source: DataSource) -> dict[str, object]:
    label_set = source.label_set if source.label_set is None or isinstance(source.label_set, str) else list(source.label_set)
    path = None if source.path is None else str(source.path)
    return {"dataset": source.name, "labels": source.labels, "path": path, "label_set": label_set}


def _input_of(data: dict) -> tuple[object, ...]:
    """What identifies an input in a metrics.json's ``data``: its path compared resolved, as the
    same folder may be named from another working directory."""
    path = data.get("path")
    return data.get("dataset"), data.get("labels"), None if path is None else str(Path(path).resolve()), data.get("label_set")


def _describe(data: dict) -> str:
    parts = [f"--dataset {data.get('dataset')}", f"--labels {data.get('labels')}"]
    parts += [f"--data {data['path']}"] if data.get("path") else []
    parts += [f"--label-set {data['label_set']}"] if data.get("label_set") else []
    return " ".join(parts)


# evaluate is not shared across processes: scoring needs every prediction in one place, and
# evaluate_model checks, predicts and writes in one call. predict is the command that shares.
ONE_PROCESS_EVALUATION = (
    "every process would score the whole split and write the same folder. Run it without torchrun or accelerate "
    "launch; to share the predictions across processes, run 'instructerc predict' under the launcher"
)

ONE_PROCESS_BASELINES = (
    "every process would train the same baselines and write the same folder. Run it without torchrun or accelerate launch"
)


def run_evaluate(args: argparse.Namespace) -> int:
    from instructerc.cli.process_group import refuse_under_launcher
    from instructerc.errors import InputError
    from instructerc.evaluation.evaluate import evaluate_model
    from instructerc.evaluation.report import summary_lines
    from instructerc.extras import require_extra

    refuse_under_launcher("evaluate", ONE_PROCESS_EVALUATION)
    if args.runs:
        given = [flag for flag, value in _scoring_options(args) if value]
        if given:
            raise InputError(f"--runs aggregates finished evaluations: it takes no {', '.join(given)}", field="runs")
        return aggregate_runs(args)
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--split", args.split)) if value is None]
    if missing:
        raise InputError(f"evaluate needs {', '.join(missing)} (or --runs DIR DIR ... to aggregate earlier evaluations)")
    require_extra("evaluate", "train")
    from instructerc.data.dialogue import canonical_split
    from instructerc.modeling.default_model import default_model_dir

    source = data_source(args)
    out = args.out
    if out is None:
        out = default_out(args.model, dataset_part(source), canonical_split(args.split), args.mode, args.paper_parsing)
        refuse_other_input(out, source)
    refuse_baseline_run(out, args.baselines)
    result = evaluate_model(
        args.model if args.model is not None else default_model_dir(),
        source,
        args.split,
        out,
        mode=args.mode,
        paper_parsing=args.paper_parsing,
        baselines_from=args.baselines,
        with_baselines=args.with_baselines,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        dtype=args.dtype or "auto",
        trust_remote_code=args.trust_remote_code,
    )
    for line in summary_lines(result):
        print(line)
    print(f"wrote metrics.json, predictions.jsonl, report.md and confusion matrices to {out}")
    return 0


def _scoring_options(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """Each option that scores a model, and whether it was given: --runs reads finished
    evaluations, so any of them would be silently ignored."""
    return [
        ("--model", args.model is not None),
        ("--dataset", args.dataset is not None),
        ("--split", args.split is not None),
        ("--data", args.data is not None),
        ("--labels", args.labels != "original"),
        ("--label-set", args.label_set is not None),
        ("--mode", args.mode != "score"),
        ("--paper-parsing", args.paper_parsing),
        ("--baselines", args.baselines is not None),
        ("--with-baselines", args.with_baselines),
        ("--dtype", args.dtype is not None),
        ("--trust-remote-code", args.trust_remote_code),
        ("--chunk-size", args.chunk_size != CHUNK_SIZE),
    ]


def aggregate_runs(args: argparse.Namespace) -> int:
    from instructerc.evaluation.aggregate import SCALARS, aggregate, load_runs, write_aggregate
    from instructerc.evaluation.report import SHORT_NAMES, check_output_folder
    from instructerc.evaluation.results import metrics_file

    if args.out:
        # A file or a broken symlink there made mkdir fail with a bare 'File exists'.
        check_output_folder(args.out)
    summary = aggregate(load_runs(args.runs), [str(metrics_file(run).resolve()) for run in args.runs])
    for name, system in summary["systems"].items():
        for dataset, row in system["by_dataset"].items():
            cells = "  ".join(f"{metric.replace('_', ' ')} {row[metric]['mean']:.2f} ± {row[metric]['std']:.2f}" for metric in SCALARS)
            print(f"{SHORT_NAMES.get(name, name):10} {dataset} {summary['split']} ({summary['n']} runs): {cells}")
    if summary["skipped"]:
        print(f"not in every run, left out: {', '.join(summary['skipped'])}")
    if args.out:
        try:
            write_aggregate(summary, args.out)
        except OSError as error:
            raise output_error(error, args.out) from None
        print(f"wrote aggregate.json and aggregate.md to {args.out}")
    return 0


def refuse_model_evaluation(out: Path) -> None:
    """An :class:`InputError` when the folder ``out`` holds a model's evaluation (an ``llm`` in its
    metrics.json, or a predictions.jsonl): the baselines' metrics.json and report.md would replace
    the model's, and their run removes the predictions that no longer match. A baseline run's
    own folder (baselines only, no predictions) is written again."""
    from instructerc.errors import InputError
    from instructerc.evaluation.results import METRICS_FILE, PREDICTIONS_FILE, EvaluationResult

    way = (
        "write the baselines to a folder of their own (--out DIR) and show them beside the model's scores "
        "with 'instructerc evaluate --baselines DIR'"
    )
    models = []
    if (out / METRICS_FILE).is_file():
        try:
            systems = EvaluationResult.load(out).systems.values()
        except InputError:
            systems = []  # not ours to judge: an unreadable file holds no evaluation worth keeping
        models = [str(system.settings.get("model", "a model")) for system in systems if system.kind == "llm"]
    if models:
        what = f"holds the evaluation of {models[0]} (written by 'instructerc evaluate'), which the baselines would replace"
        raise InputError(f"{what}: {way}", path=out, field="out")
    if (out / PREDICTIONS_FILE).exists():
        raise InputError(f"holds a model's {PREDICTIONS_FILE}, which writing the baselines here would remove: {way}", path=out, field="out")


def refuse_unused_encoder_options(args: argparse.Namespace) -> None:
    """An :class:`InputError` for the options of the MiniLM baseline given with ``--only majority``:
    that run neither embeds nor fits, so they would be ignored without a word."""
    from instructerc.errors import InputError

    if args.only is None or "minilm-logreg" in args.only:
        return
    given = [flag for flag, value in (("--encoder", args.encoder), ("--c-grid", args.c_grid), ("--cache-dir", args.cache_dir)) if value]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise InputError(f"{', '.join(given)} only {verb} to the minilm-logreg baseline, which --only leaves out", field="only")


def run_baseline(args: argparse.Namespace) -> int:
    from instructerc.cli.process_group import refuse_under_launcher
    from instructerc.extras import require_extra

    refuse_under_launcher("baseline", ONE_PROCESS_BASELINES)
    require_extra("baseline", "train")
    from instructerc.evaluation.baselines import BASELINES, C_GRID, run_baselines
    from instructerc.evaluation.report import check_output_folder, summary_lines, write_outputs

    check_output_folder(args.out)  # before the baselines are trained, not after
    refuse_model_evaluation(args.out)
    refuse_unused_encoder_options(args)
    result = run_baselines(
        data_source(args),
        args.split,
        which=args.only or BASELINES,
        encoder_name=args.encoder or DEFAULT_BASELINE_ENCODER,
        c_grid=tuple(args.c_grid) if args.c_grid else C_GRID,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    try:
        write_outputs(result, args.out)
    except OSError as error:
        raise output_error(error, Path(error.filename or args.out)) from None
    for line in summary_lines(result):
        print(line)
    print(f"wrote metrics.json, report.md and confusion matrices to {args.out}")
    return 0
