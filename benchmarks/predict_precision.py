"""``instructerc predict`` with the shipped default model on all of MELD test, in each precision.

Each precision runs the real command in its own process, as a user runs it, ``--repeats`` times,
alternating precisions so that drift of the machine hits both alike. Reported per run: the wall
time of the whole command (imports and model loading included), the labelling rate (utterances
over the time from the first to the last prediction, as the progress bar shows it), peak RSS,
and how many labels agree with the float32 run.

    python benchmarks/predict_precision.py --data ../shared/data --json results/precision/predict.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import check_meld, output_file, positive_int, write_json


def export_meld_test(data: Path, target: Path) -> int:
    """MELD test as user JSONL in the default model's label space; returns its utterance count."""
    command = [
        sys.executable,
        "-m",
        "instructerc",
        "data",
        "export",
        "--dataset",
        "meld",
        "--data",
        str(data),
        "--split",
        "test",
        "--labels",
        "uime",
        "--out",
        str(target),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"exporting MELD test failed:\n{done.stderr[-3000:]}")
    with target.open(encoding="utf-8") as handle:
        return sum(len(json.loads(line)["utterances"]) for line in handle)


def labelling_seconds(stderr: str) -> float | None:
    """The progress bar's elapsed time at its last update (``[mm:ss<...``)."""
    import re

    found = re.findall(r"\[(\d+):(\d+)<", stderr.replace("\r", "\n"))
    return None if not found else int(found[-1][0]) * 60 + int(found[-1][1])


def run_predict(source: Path, output: Path, dtype: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "instructerc", "predict", "--input", str(source), "--output", str(output), "--dtype", dtype],
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_MININTERVAL": "0"},
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"predict --dtype {dtype} failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "dtype": dtype,
        "wall_seconds": wall,
        "labelling_seconds": labelling_seconds(done.stderr),
        "peak_rss_mb": peak / 1024 if peak > before else None,
        "stdout": done.stdout.strip(),
    }


def median_or_none(values: list[float]) -> float | None:
    """The median, or None where no run showed a labelling time (a run under a second, or no
    progress bar): the wall times are still worth writing."""
    return statistics.median(values) if values else None


def shown(value: float | None, spec: str = "6.1f") -> str:
    return "-" if value is None else format(value, spec)


def labels(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [u["predicted_emotion"] for line in handle for u in json.loads(line)["utterances"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"], choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--json", type=output_file, help="also write the figures here")
    args = parser.parse_args(argv)
    check_meld(parser, args.data, "test")
    # The export and the predictions are copies of MELD test: removed with the folder at the end.
    with tempfile.TemporaryDirectory(prefix="predict-precision-") as scratch:
        measure(args, Path(scratch))


def measure(args: argparse.Namespace, work: Path) -> None:
    source = work / "meld-test.jsonl"
    utterances = export_meld_test(args.data, source)
    runs = []
    for repeat in range(args.repeats):
        for dtype in args.dtypes:
            run = run_predict(source, work / f"{dtype}-{repeat}.jsonl", dtype)
            run["repeat"] = repeat
            run["labels"] = labels(work / f"{dtype}-{repeat}.jsonl")
            runs.append(run)
            rate = "-" if not run["labelling_seconds"] else f"{utterances / run['labelling_seconds']:.1f}"
            print(
                f"{dtype:8} run {repeat + 1}: wall {run['wall_seconds']:6.1f} s ({utterances / run['wall_seconds']:5.1f} utt/s), "
                f"labelling {rate} utt/s; {run['stdout'].splitlines()[-1]}",
                flush=True,
            )
    reference = next((r["labels"] for r in runs if r["dtype"] == "float32"), None)
    summary = {}
    for dtype in args.dtypes:
        mine = [r for r in runs if r["dtype"] == dtype]
        summary[dtype] = {
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
            "median_labelling_utterances_per_s": median_or_none(
                [utterances / r["labelling_seconds"] for r in mine if r["labelling_seconds"]]
            ),
            "labels_equal_to_float32": None if reference is None else sum(a == b for a, b in zip(mine[0]["labels"], reference)),
        }
    print(f"\nMELD test, {utterances} utterances, median of {args.repeats}:")
    for dtype, s in summary.items():
        agree = "" if s["labels_equal_to_float32"] is None else f", {s['labels_equal_to_float32']}/{utterances} labels as float32"
        print(f"  {dtype:8} wall {s['median_wall_seconds']:6.1f} s, labelling {shown(s['median_labelling_utterances_per_s'])} utt/s{agree}")
    if "float32" in summary:
        for dtype in (d for d in args.dtypes if d != "float32"):
            mine, base = summary[dtype], summary["float32"]
            labelling = None
            if mine["median_labelling_utterances_per_s"] and base["median_labelling_utterances_per_s"]:
                labelling = mine["median_labelling_utterances_per_s"] / base["median_labelling_utterances_per_s"]
            print(
                f"  {dtype} / float32: wall {base['median_wall_seconds'] / mine['median_wall_seconds']:.2f}x, "
                f"labelling {shown(labelling, '.2f')}x"
            )
    if args.json:
        for run in runs:
            run.pop("labels")
        write_json(args.json, {"utterances": utterances, "summary": summary, "runs": runs}, args)


if __name__ == "__main__":
    main()
