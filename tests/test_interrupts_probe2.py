"""Commands stopped midway (Ctrl-C, SIGTERM, a full disk): one line, the shell's status, and the
earlier outputs of a folder left exactly as they were."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.cli import data_commands
from instructerc.cli import main as cli_main
from instructerc.evaluation import report
from instructerc.evaluation.metrics import compute_metrics
from instructerc.evaluation.report import write_outputs
from instructerc.evaluation.results import EvaluationResult, SystemResult
from instructerc.labels.benchmarks import MELD
from tiny import write_split


def result_with(hits: int) -> EvaluationResult:
    gold = [MELD.labels[i % 3] for i in range(6)]
    predicted = gold[:hits] + [MELD.labels[0]] * (len(gold) - hits)
    system = SystemResult("baseline", {"d": compute_metrics(gold, predicted, MELD.labels)}, {"label": MELD.labels[0]})
    return EvaluationResult("test", {"dataset": "jsonl", "labels": "original"}, {"majority": system})


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_ctrl_c_while_the_libraries_load_is_one_line_and_status_130(monkeypatch, capsys) -> None:
    def interrupted_import(progress: bool) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "quiet_libraries", interrupted_import)
    try:
        code = cli_main.main(["data", "list"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while the libraries load escaped main (a traceback)")
    assert code == 130
    assert capsys.readouterr().err == "instructerc: interrupted\n"


def test_sigterm_says_so_in_one_line_with_status_143(monkeypatch, capsys) -> None:
    def stopped(args) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr(data_commands, "list_sources", stopped)
    assert cli_main.main(["data", "list"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "instructerc: terminated (SIGTERM)\n"


def test_an_evaluation_stopped_while_drawing_leaves_the_earlier_folder_whole(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "eval"
    write_outputs(result_with(hits=2), out)
    before = contents(out)

    def interrupted(*args) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "confusion_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(result_with(hits=5), out)
    assert contents(out) == before  # not the new metrics.json beside the old report.md


def test_a_full_disk_while_writing_a_baseline_leaves_the_earlier_folder_whole(tmp_path: Path) -> None:
    """The confusion matrix (about 40 kB) is over the limit, metrics.json (3 kB) is not: the new
    metrics.json must not replace the old one beside the old report.md and matrix."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed in ((first, 1), (second, 2)):
        folder.mkdir()
        for split, count in (("train", 8), ("dev", 3), ("test", 6 + seed)):
            write_split(folder / f"{split}.jsonl", count, seed=seed * 10 + count)
    out = tmp_path / "out"

    def baseline(data: Path, size_limit: int | None) -> subprocess.CompletedProcess:
        def limit() -> None:
            if size_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
                resource.setrlimit(resource.RLIMIT_FSIZE, (size_limit, size_limit))

        argv = ["baseline", "--dataset", "jsonl", "--data", str(data), "--label-set", "meld", "--split", "test"]
        argv += ["--out", str(out), "--only", "majority", "--no-progress"]
        command = [sys.executable, "-m", "instructerc", *argv]
        return subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, timeout=300)

    assert baseline(first, None).returncode == 0
    before = contents(out)
    assert max(len(b) for b in before.values()) > 20_000 > len(before["metrics.json"])
    failed = baseline(second, 20_000)
    assert failed.returncode == 1  # the machine (a file size limit), not the input
    assert failed.stderr.strip().count("\n") == 0 and "File too large" in failed.stderr, failed.stderr
    assert f"{out / 'confusion-majority-'}" in failed.stderr  # the file that did not fit, not just its folder
    assert contents(out) == before


def test_an_evaluation_stopped_while_drawing_keeps_the_earlier_predictions_too(tmp_path: Path, monkeypatch) -> None:
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.evaluation import evaluate
    from instructerc.labels.prediction import Prediction

    dialogues = [Dialogue("d1", "jsonl", "test", (Utterance("Ann", "Hi!", MELD.labels[0]),))]
    out = tmp_path / "eval"
    evaluate._write(out, result_with(hits=2), dialogues, [[Prediction(MELD.labels[0])]], "score", MELD)
    before = contents(out)
    assert "predictions.jsonl" in before

    def interrupted(*args) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "confusion_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate._write(out, result_with(hits=5), dialogues, [[Prediction(MELD.labels[1])]], "score", MELD)
    assert contents(out) == before  # not new predictions beside the old metrics.json


def test_the_terminal_summary_keeps_a_dataset_name_with_a_line_break_on_one_line() -> None:
    from instructerc.evaluation.report import summary_lines

    result = result_with(hits=2)
    system = result.systems["majority"]
    odd = EvaluationResult(
        "test", result.data, {"majority": SystemResult("baseline", {"my|set\nx": system.by_dataset["d"]}, system.settings)}
    )
    (line,) = summary_lines(odd)
    assert "\n" not in line and "my|set\\nx test: weighted F1" in line
