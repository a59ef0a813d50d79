"""Options several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from instructerc.data.registry import DataSource


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="NAME", help="a registered dataset: meld, emorynlp, iemocap, cosmic-meld, cosmic-emorynlp, cosmic-iemocap, uime, jsonl")
    parser.add_argument("--data", type=Path, metavar="PATH", help="data root (holding meld/, emorynlp/, cosmic/), a dataset folder, or a JSONL file")
    parser.add_argument("--labels", default="original", metavar="SPACE", help="original (default), uime (the paper's unified labels) or uime:feeling-wheel")
    parser.add_argument("--label-set", metavar="NAME", help="JSONL only: the label set its emotions follow (meld, emorynlp, iemocap, uime)")


def data_source(args: argparse.Namespace) -> DataSource:
    return DataSource(name=args.dataset, path=args.data, labels=args.labels, label_set=args.label_set)
