"""Two command-line options that give one recipe field different values are refused, not one silently dropped."""

from __future__ import annotations

import pytest

from instructerc.cli.main import main


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--set", "optim.lr=0.1", "--set", "optim.lr=0.2"], "--set optim.lr=0.1 and --set optim.lr=0.2"),
        (["--set", "seed=3", "--seed", "4"], "--set seed=3 and --seed 4"),
        (["--set", "stages[0].epochs=2", "--set", "stages.0.epochs=3"], "--set 'stages[0].epochs=2' and --set stages.0.epochs=3"),
    ],
)
def test_two_options_giving_one_field_two_values_are_refused(tmp_path, capsys, options, named) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n", encoding="utf-8")
    assert main(["train", str(recipe), "--output", str(tmp_path / "run"), *options]) == 2
    err = capsys.readouterr().err
    assert named in err and "two values" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_same_value_given_twice_is_no_contradiction() -> None:
    from argparse import Namespace

    from instructerc.cli.train_commands import given_overrides

    args = Namespace(set=["seed=3"], output=None, data=None, data_fraction=None, seed=3, model=None, dtype=None, strategy=None)
    assert [key for key, _, _ in given_overrides(args)] == ["seed", "seed"]
