"""The CLI surface a newcomer meets: numbers out of range are refused naming their option, in
one line, before a model loads or any output is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tiny import write_split


@pytest.mark.parametrize("size", ["0", "-5"])
def test_evaluate_refuses_a_chunk_size_below_one_before_the_model_loads(run_cli, tmp_path: Path, size: str) -> None:
    data = tmp_path / "dialogues.jsonl"
    write_split(data, 3, seed=0)
    out = tmp_path / "eval"
    # The model folder does not exist: the option is refused before anything reads it.
    argv = ["evaluate", "--model", tmp_path / "no-model", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out]
    result = run_cli(*argv, "--chunk-size", size, "--no-progress")
    assert result.code == 2
    assert result.err == "instructerc: error: argument --chunk-size: the chunk size must be at least 1\n"
    assert not out.exists()


@pytest.mark.parametrize("command", ["predict", "export"])
def test_an_output_named_dash_is_refused_not_written_as_a_file_named_dash(
    run_cli, capsys, tmp_path: Path, monkeypatch, command: str
) -> None:
    data = tmp_path / "dialogues.jsonl"
    write_split(data, 3, seed=0)
    monkeypatch.chdir(tmp_path)
    if command == "predict":
        argv = ["predict", "--input", data, "--output", "-", "--model", tmp_path / "no-model"]
    else:
        argv = ["data", "export", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", "-"]
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    assert stop.value.code == 2
    option = "--output" if command == "predict" else "--out"
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f"error: argument {option}: '-' is not stdout here: give /dev/stdout (or ./- for a file named '-')")
    )
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["predict", "--input", "a.jsonl", "--output", "x.jsonl", "--output", "y.jsonl"],
            "argument --output: given twice, as '--output x.jsonl' and '--output y.jsonl'",
        ),
        (["predict", "--input", "a.jsonl", "--output", "x.jsonl", "--mode", "score", "--mode=generate"], "argument --mode: given twice"),
        (
            ["serve", "--model", "no-model", "--batching", "--no-batching"],
            "argument --batching/--no-batching: given twice, as '--batching' and '--no-batching'",
        ),
        (["baseline", "--split", "test", "--out", "b", "--only", "majority", "--only", "minilm-logreg"], "argument --only: given twice"),
    ],
)
def test_an_option_given_twice_with_two_values_is_refused(run_cli, capsys, argv: list[str], said: str) -> None:
    # Every command line here fails on its own (no such model, no dataset) should the repeat pass.
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    assert stop.value.code == 2
    assert said in capsys.readouterr().err.splitlines()[-1]


def test_an_option_repeated_with_the_same_value_is_kept() -> None:
    from instructerc.cli.main import build_parser

    args = build_parser().parse_args(["predict", "--input", "a.jsonl", "--output", "x.jsonl", "--output", "x.jsonl"])
    assert args.output == Path("x.jsonl")
    served = build_parser().parse_args(["serve", "--no-batching", "--no-batching", "--max-batch-size", "4", "--max-batch-size", "4"])
    assert served.batching is False and served.max_batch_size == 4


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["predict", "--input", "a.jsonl", "--output", "x.jsonl", "--mdoe", "score"],
            "instructerc predict: error: unrecognized arguments: --mdoe score (did you mean --mode?)",
        ),
        (["prompts", "show", "--limit", "3"], "instructerc prompts show: error: unrecognized arguments: --limit"),
        (["serve", "--portt=9"], "instructerc serve: error: unrecognized arguments: --portt=9 (did you mean --port?)"),
    ],
)
def test_a_mistyped_option_is_refused_by_its_command_with_the_option_meant(run_cli, capsys, argv: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2
    assert err[0].startswith(f"usage: instructerc {argv[0]}") and err[-1] == said


def test_a_command_started_with_stdout_closed_still_does_its_work(monkeypatch, tmp_path: Path) -> None:
    # ``instructerc ... >&-``: Python then has no sys.stdout at all, and print() drops what it is given.
    from instructerc.cli.main import main
    from instructerc.labels.benchmarks import MELD
    from tiny import tiny_model_dir

    data = tmp_path / "dialogues.jsonl"
    write_split(data, 3, seed=0)
    model = tiny_model_dir(tmp_path / "model", MELD)
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["data", "stats", "--dataset", "jsonl", "--data", str(data)]) == 0
    assert main(["predict", "--input", str(data), "--output", str(tmp_path / "out.jsonl"), "--model", str(model), "--no-progress"]) == 0
    assert len((tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()) == 3


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--max-batch-size", "0"], "--max-batch-size must be > 0"),
        (["--wait-share", "nan"], "--wait-share must be a finite number, not nan"),
        (["--allowed-host", ""], "--allowed-host must be a list of non-empty names"),
    ],
)
def test_a_serve_limit_out_of_range_names_its_option(run_cli, argv: list[str], said: str) -> None:
    result = run_cli("serve", "--model", "no-model", *argv)
    assert (result.code, result.out, result.err) == (2, "", f"instructerc: error: {said}\n")


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--list", "--report-only"], "--list only lists the runs: it writes no report, so --report-only has nothing to do"),
        (
            ["--list", "--results", "elsewhere"],
            "--list only lists the runs: it writes no report, so --results has nothing to do",
        ),
        (
            ["--report-only", "--only", "seed=1"],
            "--report-only reports every finished run: --only chooses runs to train or list",
        ),
        (["--only", ""], "argument --only: an empty TEXT matches every run"),
        (["--list", "--only", "seed=1", "--only", " "], "argument --only: an empty TEXT matches every run"),
    ],
)
def test_experiment_options_one_would_ignore_are_refused(run_cli, tmp_path: Path, options: list[str], said: str) -> None:
    # The grid need not exist: the options are refused before it is read.
    result = run_cli("experiment", tmp_path / "grid.yaml", *options)
    assert (result.code, result.out, result.err) == (2, "", f"instructerc: error: {said}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["predict", "export"])
def test_an_output_inside_a_file_is_refused_before_the_model_loads(run_cli, tmp_path: Path, command: str) -> None:
    data = tmp_path / "dialogues.jsonl"
    write_split(data, 3, seed=0)
    target = data / "sub" / "out.jsonl"
    if command == "predict":
        # No such model folder: before the fix, that was the error met first, and a real model loaded before the write failed.
        result = run_cli("predict", "--input", data, "--output", target, "--model", tmp_path / "no-model")
        option = "--output"
    else:
        result = run_cli("data", "export", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", target)
        option = "--out"
    assert (result.code, result.out) == (2, "")
    assert result.err == f"instructerc: error: {target}: {data} is a file, not a folder; {option} names the file to write\n"


def test_after_ctrl_c_a_second_one_does_not_break_into_the_exit(capsys) -> None:
    import signal

    from instructerc.cli.main import interrupted

    previous = signal.getsignal(signal.SIGINT)
    try:
        assert interrupted() == 130
        # The exit handlers of torch and others run next: a second Ctrl-C there was a traceback.
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "instructerc: interrupted\n"


def test_an_option_error_names_the_option_typed_not_the_field_it_sets(run_cli, tmp_path: Path) -> None:
    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", tmp_path, "--label-set", "nosuch")
    assert result.code == 2
    assert result.err.startswith("instructerc: error: argument --label-set: unknown label set 'nosuch'"), result.err


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--input", "", "--output", "out.jsonl"],
        ["predict", "--input", "in.jsonl", "--output", ""],
        ["data", "stats", "--dataset", "meld", "--data", ""],
        ["evaluate", "--model", "", "--dataset", "meld", "--split", "test"],
        ["experiment", ""],
        ["train", "recipe.yaml", "--output", ""],
        ["train", "recipe.yaml", "--data", " "],
        ["train", "recipe.yaml", "--model", ""],
    ],
    ids=["input", "output", "data", "model", "grid", "train-output", "train-data", "train-model"],
)
def test_an_empty_path_is_refused_not_read_as_the_working_directory(capsys, argv: list[str]) -> None:
    from instructerc.cli.main import main

    # Path("") is "."; an unset variable in --data "$DATA" would otherwise name the working directory.
    with pytest.raises(SystemExit) as stop:
        main(argv)
    captured = capsys.readouterr()
    assert stop.value.code == 2 and captured.out == ""
    assert captured.err.splitlines()[-1].endswith("an empty path (an unset variable?)"), captured.err
