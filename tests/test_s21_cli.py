"""The CLI, round 21: no abbreviated options, help said once under a launcher, ``prompts show``
on one JSONL file prompting as predict does, and ``--set`` values that would be silently lost."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

import pytest

from instructerc.cli.main import build_parser, main
from instructerc.labels.benchmarks import MELD

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def error_line(err: str) -> str:
    [line] = [line for line in err.splitlines() if "error:" in line]
    return line


def every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += every_parser(sub)
    return found


# -- abbreviations -----------------------------------------------------------------------------------


def test_no_parser_of_the_cli_takes_an_abbreviation() -> None:
    # argparse's add_parser does not pass allow_abbrev on to the sub-parsers it makes.
    parsers = every_parser(build_parser())
    assert len(parsers) >= 12
    assert [parser.prog for parser in parsers if parser.allow_abbrev] == []


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["predict", "--inp", "a.jsonl", "--output", "b.jsonl"], "unrecognized arguments: --inp (did you mean --input?"),
        (["predict", "--input", "a.jsonl", "--output", "b.jsonl", "--mod=x"], "--mod=x (did you mean --mode or --model?"),
        (["serve", "--thr", "2"], "unrecognized arguments: --thr 2 (did you mean --threads?"),
        (["serve", "--no-batch"], "(did you mean --no-batching?"),
        (["train", "recipe.yaml", "--se", "seed=1"], "(did you mean --seed or --set?"),
        (["prompts", "show", "--dataset", "meld", "--ind", "3"], "(did you mean --index?"),
        (["data", "export", "--dataset", "meld", "--split", "dev", "--ou", "x.jsonl"], "(did you mean --out?"),
    ],
)
def test_an_abbreviation_is_told_the_option_it_begins(capsys, argv: list[str], said: str) -> None:
    # Was: taken as the option it begins, so an option added later would change its meaning.
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)  # parsed only: taken, serve --thr 2 would start serving
    line = error_line(capsys.readouterr().err)
    assert stop.value.code == 2
    assert said in line and line.endswith("options are not abbreviated)"), line


def test_an_abbreviation_missing_a_required_option_is_named_too(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--inp", "a.jsonl", "--outp", "b.jsonl"])
    line = error_line(capsys.readouterr().err)
    assert "required: --input, --output; unrecognized arguments: --inp --outp (did you mean --input?" in line, line


def test_the_top_command_line_names_an_abbreviation_of_version(capsys, monkeypatch) -> None:
    # From the real command line (no argv given), as the console script runs it.
    monkeypatch.setattr(sys, "argv", ["instructerc", "--vers"])
    with pytest.raises(SystemExit) as stop:
        main()
    line = error_line(capsys.readouterr().err)
    assert stop.value.code == 2
    assert "unrecognized arguments: --vers (did you mean --version?" in line, line


def test_whole_options_still_work(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"id": "a", "utterances": [{"speaker": "A", "text": "hi", "emotion": "joy"}]}) + "\n")
    result = run_cli("data", "export", "--dataset=jsonl", "--data", data, "--split", "test", "--out", tmp_path / "out.jsonl")
    assert result.code == 0, result.err
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1


# -- help under a launcher ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def launched(monkeypatch):
    """This process as one of two a launcher started (no agent), before any process group."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["prompts", "show", "-h"], ["serve", "--help"], ["--version"]])
@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_help_and_version_are_printed_by_the_first_process_alone(launched, capsys, argv, rank, said) -> None:
    # Was: printed by every process torchrun started, once per process.
    launched.setenv("RANK", rank)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    out = capsys.readouterr().out
    assert stop.value.code in (0, None)
    assert bool(out.strip()) is said, out


def test_help_without_a_launcher_is_printed(capsys, monkeypatch) -> None:
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert capsys.readouterr().out.startswith("usage: instructerc evaluate")


# -- prompts show --model on one JSONL file ----------------------------------------------------------


def same_label_model(directory: Path, backbone: Path, tmp_path: Path) -> Path:
    """A model directory whose template shows a demonstration retrieved by the ``same-label``
    policy (gold-restricted at training time only), with a pool of a joy and an anger utterance."""
    from instructerc.data.dialogue import Dialogue, Utterance
    from instructerc.modeling.backbone import BackboneConfig
    from instructerc.modeling.model_dir import Manifest
    from instructerc.prompts.setup import PromptSetup
    from instructerc.prompts.templates import TemplateConfig
    from instructerc.retrieval.encoder import SentenceEncoder
    from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig, save_pool

    directory.mkdir()
    retrieval = RetrievalConfig(policy="same-label", cache_dir=str(tmp_path / "cache"))
    PromptSetup(TemplateConfig(name="instructerc", demonstration=True), MELD, 512, retrieval).save(directory)
    Manifest(BackboneConfig(model=str(backbone)), "lora").save(directory)
    pool = [
        Dialogue("p1", "meld", "train", (Utterance("Ann", "I love this cake so much", "joy"),)),
        Dialogue("p2", "meld", "train", (Utterance("Bob", "I hate waiting in line", "anger"),)),
    ]
    save_pool(DemonstrationIndex.build(pool, SentenceEncoder.load(retrieval.encoder), retrieval), directory)
    return directory


QUERY = {"id": "q", "utterances": [{"speaker": "C", "text": "I love this cake", "emotion": "anger"}]}
NEAREST = 'the utterance <"I love this cake so much">'  # what predict retrieves: the closest text
GOLD_LABELLED = 'the utterance <"I hate waiting in line">'  # the same-label pick: the gold's own label


@pytest.mark.parametrize("split", [None, "train", "dev", "test"])
def test_prompts_show_with_a_model_prompts_one_file_as_predict_does(run_cli, tmp_path: Path, backbone: Path, split) -> None:
    # Was: the default --split train showed the training-time demonstration, chosen by the gold
    # label, which predict and evaluate never show for a file (training refuses one file anyway).
    model = same_label_model(tmp_path / "model", backbone, tmp_path)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(QUERY) + "\n", encoding="utf-8")
    chosen = ["--split", split] if split else []

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--model", model, *chosen)

    assert result.code == 0, result.err
    assert NEAREST in result.out and GOLD_LABELLED not in result.out, result.out


def test_prompts_show_with_a_model_on_a_folders_train_split_still_shows_the_training_prompt(
    run_cli, tmp_path: Path, backbone: Path
) -> None:
    model = same_label_model(tmp_path / "model", backbone, tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(QUERY) + "\n", encoding="utf-8")

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", folder, "--model", model, "--split", "train")

    assert result.code == 0, result.err
    assert GOLD_LABELLED in result.out, result.out


# -- --set values that would be lost -----------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    from tiny import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("recipe"), {"train": 4, "dev": 2})


def checked(recipe: Path, *options: str):
    from instructerc.cli.train_commands import checked_recipe

    return checked_recipe(build_parser().parse_args(["train", str(recipe), *options]))


@pytest.mark.parametrize("item", ["data.path=", "output_dir=", "seed=  ", "optim.lr="])
def test_an_empty_set_value_is_refused_not_read_as_the_default(recipe: Path, item: str) -> None:
    # Was: YAML reads nothing as null, so --set data.path=$UNSET trained on the default data.
    from instructerc.errors import InputError

    key = item.split("=")[0]
    with pytest.raises(InputError) as refused:
        checked(recipe, "--set", item)
    assert refused.value.message == f"--set {key}: an empty value (an unset variable?): give a value, or {key}=null to mean none"


def test_an_empty_set_value_is_one_line_from_the_cli(run_cli, recipe: Path) -> None:
    result = run_cli("train", recipe, "--set", "data.path=")
    assert result.code == 2 and "Traceback" not in result.err
    assert (
        result.err.strip()
        == "instructerc: error: --set data.path: an empty value (an unset variable?): give a value, or data.path=null to mean none"
    )


def test_null_written_out_is_still_taken(recipe: Path) -> None:
    assert checked(recipe, "--set", "data.path=null").data.path is None


@pytest.mark.parametrize(
    "options",
    [
        ("--set", "optim.lr=1e-4", "--set", "optim={lr: 2e-4}"),
        ("--set", "optim={lr: 1e-4}", "--set", "optim.lr=2e-4"),
        ("--set", "optim={lr: 1e-4}", "--set", "optim={lr: 2e-4, batch_size: 8}"),
        ("--set", "stages[0]={epochs: 2}", "--set", "stages.0.epochs=3"),
        # A mapping that replaces: the second would drop the first's speaker share.
        ("--set", "stages[0].tasks={erc: 1.0, speaker: 0.5}", "--set", "stages[0].tasks={erc: 1.0}"),
    ],
)
def test_a_mapping_and_a_key_giving_one_field_two_values_are_refused(recipe: Path, options: tuple[str, ...]) -> None:
    # Was: the later one won without a word, as two --set of one key no longer do.
    from instructerc.errors import InputError

    with pytest.raises(InputError, match="give '.*' two values; give one") as refused:
        checked(recipe, *options)
    assert refused.value.field == "set"


def test_a_mapping_and_a_key_that_agree_are_taken(recipe: Path) -> None:
    config = checked(recipe, "--set", "optim={lr: 1e-4, batch_size: 4}", "--set", "optim.lr=1e-4", "--set", "optim.micro_batch_size=4")
    assert (config.optim.lr, config.optim.batch_size, config.optim.micro_batch_size) == (1e-4, 4, 4)


# -- serve --port ------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["²", "80²", "-1", "0", "65536", ""])
def test_a_port_that_is_no_number_is_said_as_the_port_rule(capsys, port: str) -> None:
    # Was: "invalid _port value: '²'" (str.isdigit takes a superscript, int() does not).
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--port", port])
    assert stop.value.code == 2
    assert error_line(capsys.readouterr().err).endswith("argument --port: must be a TCP port, 1 to 65535")


# -- options the chosen action would ignore ----------------------------------------------------------


def test_prompts_show_refuses_a_recipe_beside_a_model(run_cli, no_model_loads, tmp_path: Path, backbone: Path) -> None:
    # Was: the model's recorded setup was shown and --config ignored, even a recipe that is not there.
    model = same_label_model(tmp_path / "model", backbone, tmp_path)
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(QUERY) + "\n", encoding="utf-8")

    result = run_cli("prompts", "show", "--dataset", "jsonl", "--data", data, "--model", model, "--config", tmp_path / "recipe.yaml")

    assert result.code == 2 and result.out == ""
    assert error_line(result.err) == (
        "instructerc: error: --model shows a trained model's prompts and --config a recipe's: give one "
        "(the model records its recipe's setup)"
    )


def one_file(tmp_path: Path) -> Path:
    data = tmp_path / "one.jsonl"
    records = [{"id": f"d{k}", "utterances": [{"speaker": "A", "text": f"hi {k}", "emotion": "joy"}]} for k in range(2)]
    data.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return data


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (("--c-grid", "0.5"), "--c-grid only applies"),
        (("--encoder", "other-encoder", "--cache-dir", "cache"), "--encoder, --cache-dir only apply"),
    ],
)
def test_a_majority_only_baseline_refuses_the_minilm_options(run_cli, tmp_path: Path, options: tuple[str, ...], said: str) -> None:
    # Was: run without them, as if they had been taken.
    data = one_file(tmp_path)
    out = tmp_path / "out"
    result = run_cli("baseline", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", out, "--only", "majority", *options)
    assert result.code == 2
    assert error_line(result.err) == f"instructerc: error: {said} to the minilm-logreg baseline, which --only leaves out"
    assert not (out / "metrics.json").exists()


def test_a_majority_only_baseline_still_runs(run_cli, tmp_path: Path) -> None:
    data = one_file(tmp_path)
    result = run_cli("baseline", "--dataset", "jsonl", "--data", data, "--split", "test", "--out", tmp_path / "out", "--only", "majority")
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "metrics.json").is_file()
