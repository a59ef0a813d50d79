"""``instructerc predict``: label every utterance of a JSONL file of dialogues.

The input is read twice, lazily: a first pass checks every line (a malformed line is reported
with its line number before any model is loaded) and counts the utterances for the progress bar;
the second predicts ``--chunk-size`` dialogues at a time and streams them out, so a file of any
size runs in bounded memory. The output goes to a temporary file renamed over ``--output`` only
at the end: a failure never leaves a half-written or lost output.

Under ``accelerate launch`` or ``torchrun`` the chunks are shared among the processes and the
output is the same file a single process writes (:mod:`instructerc.inference.sharding`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from instructerc.cli.options import (
    add_dtype_option,
    add_trust_remote_code_option,
    check_input_file,
    check_output_file,
    output_error,
    output_file,
    path_arg,
    summary_stream,
)


def register(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="predict the emotion of every utterance in a JSONL file of dialogues")
    predict.add_argument(
        "--input",
        type=path_arg,
        required=True,
        metavar="FILE.jsonl",
        help="dialogues in the user format, one per line (gold emotions optional)",
    )
    predict.add_argument(
        "--output",
        type=output_file,
        required=True,
        metavar="FILE.jsonl",
        help="the same dialogues, each utterance with predicted_emotion and emotion_scores (or generated)",
    )
    predict.add_argument("--model", type=path_arg, metavar="DIR", help="a model directory (default: the model shipped with instructerc)")
    predict.add_argument(
        "--mode",
        default="score",
        choices=["score", "generate"],
        help="score every label (default; always valid, with probabilities) or generate freely",
    )
    predict.add_argument(
        "--paper-parsing", action="store_true", help="generate mode: snap non-label generations to the closest label (the paper's repair)"
    )
    predict.add_argument(
        "--label-set",
        metavar="NAME",
        help="the label set the input's gold emotions follow (checked and made canonical); default: passed through as written",
    )
    predict.add_argument("--chunk-size", type=int, default=64, metavar="N", help="dialogues predicted at a time (default 64)")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_option(predict, "the model computes in")
    add_trust_remote_code_option(predict)
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from instructerc.extras import require_extra

    require_extra("predict", "train")
    from functools import partial

    from instructerc.cli.process_group import joined_shard_and_device
    from instructerc.evaluation.harness import chunks
    from instructerc.inference.predictor import Predictor
    from instructerc.inference.sharding import done_alike

    shard, device = joined_shard_and_device()
    try:
        # Every process checks the whole input first: bad input fails before any model time.
        model, read, sizes, named = done_alike(shard, lambda: _checked_input(args), args.output)
        load = partial(Predictor.from_directory, model, device=device, dtype=args.dtype or "auto", trust_remote_code=args.trust_remote_code)
        predictor = done_alike(shard, load, args.output)
        invalid, truncated = _predict_shard(args, predictor, shard, chunks(read(), args.chunk_size), sizes)
        # One warning and one count for the whole output, not one per process.
        truncated, invalid = shard.total(truncated), shard.total(invalid)
    finally:
        shard.close()
    note = unmapped_datasets_note(named, predictor.label_set)
    if note and shard.main:
        print(f"instructerc: warning: {note}", file=sys.stderr)
    if truncated and shard.main:
        print(
            f"instructerc: warning: {truncated} utterance(s) did not fit the model's max_length of {predictor.setup.max_length} tokens "
            'and were cut (start and end kept); they are marked "truncated": true',
            file=sys.stderr,
        )
    dialogues, utterances = sum(d for d, _ in sizes), sum(u for _, u in sizes)
    if shard.main:
        where = f", {shard.world} processes" if shard.world > 1 else ""
        print(
            f"wrote {dialogues} dialogues ({utterances} utterances) to {args.output} ({predictor.precision}{where})",
            file=summary_stream(args.output),
        )
    if args.mode == "generate" and shard.main:
        print(
            f"{invalid} of {utterances} generations are not a label (predicted_emotion null)"
            + (" after paper parsing" if args.paper_parsing else ""),
            file=summary_stream(args.output),
        )
    if shard.state is not None:
        from instructerc.cli.process_group import exit_group_member

        exit_group_member(0)
    return 0


def _checked_input(args: argparse.Namespace) -> tuple[Any, Any, list[tuple[int, int]], set[str]]:
    """The options and the whole input checked: the model directory, a reader of the input's
    dialogues, each chunk's (dialogues, utterances) and the dataset names the input gives."""
    from instructerc.data.jsonl import UNNAMED_DATASET, iter_jsonl
    from instructerc.errors import InputError
    from instructerc.evaluation.harness import chunks
    from instructerc.inference.predictor import check_mode
    from instructerc.labels.registry import named_label_set
    from instructerc.modeling.default_model import default_model_dir

    check_mode(args.mode, args.paper_parsing)
    if args.chunk_size < 1:
        raise InputError("--chunk-size must be at least 1", field="chunk-size")
    check_output_file(args.output, "--output")
    # A pipe (/dev/stdin, <(...)) exists but cannot be read twice, as predict reads its input.
    check_input_file(args.input, "the dialogues", " (predict reads its input twice)")
    model = args.model if args.model is not None else default_model_dir()
    # An empty name (``--label-set "$UNSET"``) is refused as every unknown one is, not read as none.
    gold_labels = named_label_set(args.label_set) if args.label_set is not None else None

    def read() -> Any:
        return (dialogue for _, dialogue in iter_jsonl(args.input, "test", gold_labels, default_dataset=UNNAMED_DATASET))

    named: set[str] = set()
    sizes = []
    for batch in chunks(read(), args.chunk_size):
        sizes.append((len(batch), sum(len(d) for d in batch)))
        named.update(d.dataset for d in batch if d.dataset != UNNAMED_DATASET)
    if not sizes:
        raise InputError("no dialogues in the file", path=args.input)
    return model, read, sizes, named


def unmapped_datasets_note(datasets: set[str], label_set: Any) -> str | None:
    """A note for dataset names that look like a benchmark the model's unified labels cover but
    are not one (``emory``): those dialogues get no ``predicted_original_emotion``, which the
    user who named the dataset expects."""
    import difflib

    from instructerc.labels.unified import mapping_of

    mapping = mapping_of(label_set)
    if mapping is None:
        return None
    covered = list(mapping.forward)
    misses = []
    for name in sorted(datasets):
        match = [] if mapping.covers(name) else difflib.get_close_matches(name.lower(), covered, n=1, cutoff=0.6)
        if match:
            misses.append(f"'{name}' (did you mean '{match[0]}'?)")
    if not misses:
        return None
    return (
        f"dataset {', '.join(misses)} is not one the model's {mapping.name} labels cover ({', '.join(covered)}): "
        "those dialogues get no predicted_original_emotion"
    )


def _predict_shard(args: argparse.Namespace, predictor: Any, shard: Any, batches: Any, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """Predicts this process's chunks into its output (the file, or its part of it); returns
    how many predictions were invalid and how many utterances were cut."""
    from instructerc.evaluation.harness import progress_bar, write_prediction_records
    from instructerc.inference.sharding import merge_parts, shard_output

    invalid = truncated = 0
    mine = sum(u for k, (_, u) in enumerate(sizes) if shard.owns(k))
    try:
        with progress_bar(mine, not args.no_progress and shard.main) as bar, shard_output(args.output, shard) as handle:
            for k, batch in enumerate(batches):
                if not shard.owns(k):
                    continue
                predicted = predictor.predict(batch, mode=args.mode, paper_parsing=args.paper_parsing, progress=bar)
                write_prediction_records(handle, batch, predicted, args.mode, predictor.label_set, restrict_to_dataset=True)
                invalid += sum(p.label is None for ps in predicted for p in ps)
                truncated += sum(p.truncated for ps in predicted for p in ps)
        merge_parts(args.output, shard, [d for d, _ in sizes])
    except OSError as error:
        raise output_error(error, args.output) from None
    return invalid, truncated
