"""``instructerc data``: list, stats and export."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from instructerc.cli.options import add_data_options, check_output_file, data_source, output_error, output_file, summary_stream

if TYPE_CHECKING:
    from instructerc.data.registry import DataSource


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect and convert datasets")
    verbs = data.add_subparsers(dest="verb", metavar="VERB", required=True)

    listing = verbs.add_parser("list", help="the registered datasets")
    listing.set_defaults(handler=list_sources)

    stats = verbs.add_parser("stats", help="dialogues, utterances and label counts per split")
    add_data_options(stats, positional_dataset=True)
    stats.set_defaults(handler=show_stats)

    export = verbs.add_parser("export", help="write one split in the user JSONL format")
    add_data_options(export, positional_dataset=True)
    export.add_argument("--split", required=True, help="train, dev or test")
    export.add_argument("--out", required=True, type=output_file, metavar="FILE.jsonl")
    export.set_defaults(handler=export_split)


def list_sources(args: argparse.Namespace) -> int:
    from instructerc.data.registry import available_sources

    for name, description in available_sources().items():
        print(f"{name:16} {description}")
    return 0


def show_stats(args: argparse.Namespace) -> int:
    from instructerc.data.dialogue import SPLITS
    from instructerc.data.published import warnings_held
    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.data.stats import SplitStats, format_table

    source = data_source(args)
    # A partial split's warning is printed once every split is read: a broken split after it fails in one line.
    with warnings_held():
        if source.name == "jsonl" and source.root().is_file():
            rows = [SplitStats.of(source.root().name, load_dialogues(source, "test"))]
        else:
            rows = [SplitStats.of(split, load_dialogues(source, split)) for split in SPLITS if _has_split(source, split)]
    label_set = label_set_of(source)
    print(f"{source.name} ({'labels: ' + label_set.name if label_set else 'unlabelled'})")
    print(format_table(rows, label_set.labels if label_set else None))
    return 0


def _has_split(source, split: str) -> bool:
    """A JSONL folder may lack a split; one named in other case (``dev.JSONL``) is an error."""
    if source.name != "jsonl" or not source.root().is_dir():
        return True
    from instructerc.data.jsonl import split_file_present

    return split_file_present(source.root(), split)


def export_split(args: argparse.Namespace) -> int:
    from instructerc.data.jsonl import write_jsonl
    from instructerc.data.registry import load_dialogues

    check_output_file(args.out, "--out")
    source = data_source(args)
    dialogues = load_dialogues(source, args.split)
    try:
        count = write_jsonl(dialogues, args.out)
    except OSError as error:
        raise output_error(error, args.out) from None
    print(
        f"wrote {count} dialogues ({sum(len(d) for d in dialogues)} utterances) to {args.out}{_labels_written(source)}",
        file=summary_stream(args.out),
    )
    return 0


def _labels_written(source: "DataSource") -> str:
    """The label space of the exported emotions, which the file itself does not name: a unified
    ``emotion`` and a benchmark's own look alike (``sad``, ``neutral``)."""
    from instructerc.data.registry import source_label_set

    if source.mapping is not None:
        return f", emotions in the unified labels {source.mapping.label_set.name} (the dataset's own in original_emotion)"
    if source.label_set is None and source.name == "jsonl":
        return ""  # as the file has them; naming them would mean reading the whole file again
    labels = source_label_set(source)
    return f", emotions in label set {labels.name}" if labels is not None else ""
