"""Options several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from instructerc.data.registry import DataSource


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        metavar="NAME",
        help="a registered dataset: meld, emorynlp, iemocap, cosmic-meld, cosmic-emorynlp, cosmic-iemocap, uime, jsonl",
    )
    parser.add_argument(
        "--data", type=Path, metavar="PATH", help="data root (holding meld/, emorynlp/, cosmic/), a dataset folder, or a JSONL file"
    )
    parser.add_argument(
        "--labels", default="original", metavar="SPACE", help="original (default), uime (the paper's unified labels) or uime:feeling-wheel"
    )
    parser.add_argument("--label-set", metavar="NAME", help="JSONL only: the label set its emotions follow (meld, emorynlp, iemocap, uime)")


def add_dtype_option(parser: argparse.ArgumentParser, what: str) -> None:
    from instructerc.modeling.precision import DTYPES

    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help=f"precision {what}: auto (default: bf16 on GPUs and CPUs that compute it natively, "
        "else float32), float32, bfloat16 or float16",
    )


def add_trust_remote_code_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the model's own Python files run (off: a model directory never turns it on itself)",
    )


def data_source(args: argparse.Namespace) -> DataSource:
    return DataSource(name=args.dataset, path=args.data, labels=args.labels, label_set=args.label_set)
