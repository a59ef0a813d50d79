"""README: "a mistyped option gets the likely one". argparse checks required options before it
looks at unknown ones, so a mistyped required option (``--inptu``) or another command's spelling
(``--output`` where ``evaluate``, ``baseline`` and ``data export`` take ``--out``) got no hint."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["predict", "--inptu", "a.jsonl", "--output", "x.jsonl"],
            "instructerc predict: error: the following arguments are required: --input; "
            "unrecognized arguments: --inptu (did you mean --input?)",
        ),
        (
            ["data", "export", "--dataset", "meld", "--split", "test", "--output", "x.jsonl"],
            "instructerc data export: error: the following arguments are required: --out; "
            "unrecognized arguments: --output (did you mean --out?)",
        ),
        (
            ["evaluate", "--dataset", "meld", "--split", "test", "--output", "x"],
            "instructerc evaluate: error: unrecognized arguments: --output x (did you mean --out?)",
        ),
        (
            ["data", "export", "--dataset", "meld", "--split", "test"],
            "instructerc data export: error: the following arguments are required: --out",
        ),
        (
            # Options are not abbreviated: --inp is no --input (the run would otherwise start).
            ["predict", "--inp", "a.jsonl"],
            "instructerc predict: error: the following arguments are required: --input, --output; unrecognized arguments: "
            "--inp (did you mean --input? options are not abbreviated)",
        ),
    ],
)
def test_a_mistyped_option_is_named_even_when_a_required_one_is_missing(run_cli, capsys, argv: list[str], said: str) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(*argv)
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2
    assert err[-1] == said
