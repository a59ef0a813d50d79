"""An install without the optional extras (``pip install instructerc``): every command's --help
works, and a command that needs an extra ends with one line naming it, before torch is imported
(torch without numpy prints a warning of its own), never with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.cli import train_commands
from instructerc.cli.main import main
from instructerc.extras import EXTRA_MODULES

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "src" / "instructerc" / "resources" / "samples" / "conversations.jsonl"
# Import names whose distribution is spelled otherwise in pyproject.toml.
DISTRIBUTION = {"sklearn": "scikit-learn", "sentence_transformers": "sentence-transformers", "huggingface_hub": "huggingface-hub"}


def without(modules: tuple[str, ...], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs the CLI in a fresh interpreter where ``modules`` cannot be imported or found."""
    code = f"import sys\nsys.modules.update(dict.fromkeys({modules!r}))\nfrom instructerc.cli.main import main\nsys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--input", str(SAMPLE), "--output", "out.jsonl"],
        ["evaluate", "--dataset", "jsonl", "--data", str(SAMPLE), "--split", "test", "--out", "eval"],
        ["baseline", "--dataset", "jsonl", "--data", str(SAMPLE), "--split", "test", "--out", "baselines"],
        ["experiment", str(ROOT / "experiments" / "ablation-cpu.yaml"), "--list"],
        ["serve"],
        ["prompts", "show", "--dataset", "jsonl", "--data", str(SAMPLE)],
    ],
)
def test_a_command_without_the_train_extra_says_so_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    done = without(("numpy", "transformers"), argv, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"instructerc: error: {argv[0]} needs the 'train' extra (not installed: numpy, transformers): "
        "pip install torch (the build for your hardware, see README), then pip install 'instructerc[train]'"
    ]
    assert list(tmp_path.iterdir()) == []


def test_serve_without_the_serve_extra_names_it(tmp_path: Path) -> None:
    done = without(("fastapi", "uvicorn"), ["serve"], tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr
        == "instructerc: error: serve needs the 'serve' extra (not installed: fastapi, uvicorn): pip install 'instructerc[serve]'\n"
    )


@pytest.mark.parametrize("command", ["data", "prompts", "train", "predict", "evaluate", "baseline", "experiment", "serve"])
def test_help_needs_no_extra(tmp_path: Path, command: str) -> None:
    done = without(("torch", "numpy", "transformers", "fastapi", "uvicorn"), [command, "--help"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: instructerc {command}") and done.stderr == ""


def test_huggingface_hub_missing_names_the_train_extra(monkeypatch, capsys, tmp_path: Path) -> None:
    def hub_missing(args):
        raise ModuleNotFoundError("No module named 'huggingface_hub'", name="huggingface_hub")

    monkeypatch.setattr(train_commands, "run_training", hub_missing)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}\n", encoding="utf-8")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "train needs the 'train' extra (not installed: huggingface_hub)" in err[0]


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_every_library_checked_is_declared_in_its_extra(extra: str) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"][extra]
    names = {requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower() for requirement in declared}
    for module in EXTRA_MODULES[extra]:
        assert DISTRIBUTION.get(module, module) in names, f"{module} is imported but not in the '{extra}' extra"


def test_importing_the_package_and_the_cli_loads_no_model_library() -> None:
    heavy = ("torch", "numpy", "transformers", "fastapi")
    code = f"import sys, instructerc, instructerc.cli.main\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "[]\n" and done.stderr == ""


def test_train_without_the_extra_lists_all_it_lacks_not_only_the_first_import(tmp_path: Path) -> None:
    # train imports lazily (huggingface_hub first, to check the recipe's backbone); the line names
    # everything missing, since installing only the library met first would not be enough.
    recipe = ROOT / "recipes" / "smollm2-135m-meld-cpu.yaml"
    data = tmp_path / "data.jsonl"
    data.write_text('{"utterances": [{"speaker": "A", "text": "Hi", "emotion": "joy"}]}\n', encoding="utf-8")
    done = without(
        ("huggingface_hub", "transformers"), ["train", str(recipe), "--data", str(data), "--output", str(tmp_path / "run")], tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "instructerc: error: train needs the 'train' extra (not installed: transformers, huggingface_hub): "
        "pip install torch (the build for your hardware, see README), then pip install 'instructerc[train]'"
    ]
