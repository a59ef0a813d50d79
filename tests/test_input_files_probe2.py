"""Input files that are not plain UTF-8 JSONL on disk: links that lead nowhere, split files
named in another case, other encodings in CSV, and the error of a huge non-UTF-8 file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from instructerc.config import read_yaml
from instructerc.data.jsonl import iter_jsonl, read_jsonl
from instructerc.data.loader import not_utf8, read_csv_rows
from instructerc.errors import InputError

LINE = json.dumps({"id": "d1", "utterances": [{"speaker": "Ann", "text": "Hi!", "emotion": "joy"}]}) + "\n"


def test_a_symlink_loop_is_named_as_one_not_as_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").symlink_to("b.jsonl")
    (tmp_path / "b.jsonl").symlink_to("a.jsonl")
    with pytest.raises(InputError, match="symlink loop") as caught:
        list(iter_jsonl(tmp_path / "a.jsonl"))
    assert caught.value.path == str(tmp_path / "a.jsonl")


def test_a_symlink_to_a_missing_file_names_its_target(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").symlink_to("gone.jsonl")
    with pytest.raises(InputError, match="symlink to gone.jsonl, which does not exist"):
        list(iter_jsonl(tmp_path / "a.jsonl"))


def test_a_split_file_named_in_capitals_is_refused_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(LINE, encoding="utf-8")
    (tmp_path / "dev.JSONL").write_text(LINE, encoding="utf-8")
    assert len(read_jsonl(tmp_path, "train")) == 1
    with pytest.raises(InputError, match="named dev.JSONL, not dev.jsonl") as caught:
        read_jsonl(tmp_path, "dev")
    assert caught.value.path == str(tmp_path / "dev.JSONL")


def test_a_missing_split_is_still_reported_as_missing(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(LINE, encoding="utf-8")
    with pytest.raises(InputError, match="dev.jsonl not found"):
        read_jsonl(tmp_path, "dev")


def test_a_folder_named_like_a_file_is_read_as_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "x.jsonl"
    folder.mkdir()
    (folder / "test.jsonl").write_text(LINE, encoding="utf-8")
    assert [d.id for d in read_jsonl(folder, "test")] == ["d1"]


@pytest.mark.parametrize(
    ("encoding", "name"), [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32-le", "UTF-32")]
)
def test_a_csv_in_another_encoding_names_it(tmp_path: Path, encoding: str, name: str) -> None:
    file = tmp_path / "rows.csv"
    file.write_bytes("Dialogue_ID,Utterance\n1,Hi\n".encode(encoding))
    with pytest.raises(InputError, match=f"{name} text") as caught:
        list(read_csv_rows(file, ("Dialogue_ID",)))
    assert caught.value.path == str(file)


def test_the_not_utf8_error_reads_the_file_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "big.jsonl"
    file.write_bytes(LINE.encode() * 1000 + b'{"id": "\xff"}\n')

    def whole_file(self: Path) -> bytes:
        raise AssertionError("the whole file was read into memory")

    monkeypatch.setattr(Path, "read_bytes", whole_file)
    error = not_utf8(file)
    assert error.line == 1001 and "byte 0xff" in error.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("seed: 3\n".encode("utf-16"), "UTF-16 text"),
        ("seed: 3\n".encode("utf-16-le"), "UTF-16 text"),
        ("seed: 3\n".encode("utf-32"), "UTF-32 text"),
        (gzip.compress(b"seed: 3\n", mtime=0), "gzip-compressed"),
    ],
    ids=["utf16-bom", "utf16-no-bom", "utf32-bom", "gzip"],
)
def test_a_recipe_in_another_encoding_names_it(tmp_path: Path, content: bytes, message: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_yaml(recipe)
    assert caught.value.path == str(recipe)


def test_a_recipe_byte_that_is_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"seed: 3\nname: caf\xe9\n")
    with pytest.raises(InputError, match="byte 0xe9") as caught:
        read_yaml(recipe)
    assert caught.value.line == 2


def test_a_control_character_in_a_recipe_is_one_line_naming_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"seed: 3\n\x01x: 1\n")
    with pytest.raises(InputError, match="U\\+0001") as caught:
        read_yaml(recipe)
    assert caught.value.line == 2 and "\n" not in str(caught.value)


def test_a_recipe_path_that_is_a_folder_or_a_loop_says_so(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read_yaml(tmp_path / "dir.yaml")
    (tmp_path / "a.yaml").symlink_to("b.yaml")
    (tmp_path / "b.yaml").symlink_to("a.yaml")
    with pytest.raises(InputError, match="symlink loop"):
        read_yaml(tmp_path / "a.yaml")


def test_a_recipe_with_a_utf8_bom_and_cr_line_ends_is_read(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\xef\xbb\xbfseed: 3\rdata:\r  fraction: 0.5\r")
    assert read_yaml(recipe) == {"seed": 3, "data": {"fraction": 0.5}}


def test_data_stats_refuses_a_split_file_in_other_case_and_a_data_path_that_loops(run_cli, tmp_path: Path) -> None:
    """data stats checked the split's exact name itself, so dev.JSONL was silently left out; a
    --data that is a symlink loop was 'no such file or folder'."""
    record = '{"id": "a", "utterances": [{"speaker": "A", "text": "hi", "emotion": "joy"}]}\n'
    folder = tmp_path / "caps"
    folder.mkdir()
    (folder / "train.jsonl").write_text(record, encoding="utf-8")
    (folder / "dev.JSONL").write_text(record, encoding="utf-8")
    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", folder)
    assert result.code == 2 and "dev.JSONL, not dev.jsonl" in result.err

    (folder / "dev.JSONL").unlink()
    assert run_cli("data", "stats", "--dataset", "jsonl", "--data", folder).code == 0  # a split may be missing

    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    result = run_cli("data", "stats", "--dataset", "jsonl", "--data", loop)
    assert result.code == 2 and "symlink loop" in result.err


def test_model_and_metrics_json_with_a_utf8_bom_are_read(tmp_path: Path) -> None:
    """Editors on Windows save JSON with a BOM; the file is unambiguous, as the JSONL and YAML readers already accept."""
    import shutil

    from instructerc.evaluation.results import EvaluationResult
    from instructerc.modeling.model_dir import Manifest
    from instructerc.prompts.setup import PromptSetup

    shipped = Path(__file__).resolve().parents[1] / "src" / "instructerc" / "resources" / "default_model"
    model = tmp_path / "model"
    shutil.copytree(shipped, model)
    for name in ("instructerc.json", "prompting.json"):
        file = model / name
        file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())
    assert Manifest.load(model).method == "lora"
    assert PromptSetup.load(model).template.name == "dialogue-stream"

    metrics = Path(__file__).resolve().parents[1] / "results" / "default-model" / "test" / "metrics.json"
    copy = tmp_path / "eval"
    copy.mkdir()
    (copy / "metrics.json").write_bytes(b"\xef\xbb\xbf" + metrics.read_bytes())
    assert "llm" in EvaluationResult.load(copy).systems
