"""A model directory never turns on remote code itself: only --trust-remote-code does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructerc.labels.benchmarks import MELD
from instructerc.modeling.backbone import BackboneConfig
from instructerc.modeling.model_dir import MANIFEST, Manifest
from tiny import tiny_model_dir

DIALOGUE = {"id": "d", "utterances": [{"speaker": "Ann", "text": "Hi! How are you?"}, {"speaker": "Bob", "text": "Great news!"}]}


def booby_trapped(directory: Path, marker: Path, model_type: str) -> Path:
    """A tiny model directory whose manifest asks for remote code and whose config points at a
    ``modeling_trap.py`` that writes ``marker`` as soon as it is imported."""
    tiny_model_dir(directory, MELD)
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    code += "from transformers import LlamaConfig, LlamaForCausalLM\nclass TrapConfig(LlamaConfig):\n    model_type = 'trap'\nclass TrapForCausalLM(LlamaForCausalLM):\n    config_class = TrapConfig\n"  # noqa: E501
    (directory / "modeling_trap.py").write_text(code, encoding="utf-8")
    (directory / "configuration_trap.py").write_text(code, encoding="utf-8")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_trap.TrapConfig", "AutoModelForCausalLM": "modeling_trap.TrapForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["modeling_trap.TrapTokenizer", None]}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    manifest = Manifest.load(directory)
    Manifest(backbone=BackboneConfig(model=manifest.backbone.model, trust_remote_code=True), method=manifest.method).save(directory)
    return directory


def run_process(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "instructerc", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("model_type", ["llama", "trap"], ids=["known-architecture", "unknown-architecture"])
def test_a_manifest_asking_for_remote_code_runs_none_of_it_without_the_flag(tmp_path: Path, model_type: str) -> None:
    marker = tmp_path / "marker"
    model = booby_trapped(tmp_path / "model", marker, model_type)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"

    process = run_process("predict", "--input", source, "--output", out, "--model", model, "--no-progress")

    assert not marker.exists(), "the model directory's code ran"
    assert "Traceback" not in process.stderr
    assert "asks for trust_remote_code; it stays off" in process.stderr
    if model_type == "llama":  # transformers has the architecture: the directory's code is not needed
        assert process.returncode == 0, process.stderr
        assert len(json.loads(out.read_text(encoding="utf-8"))["utterances"]) == 2
    else:  # it would need the directory's code: a one-line refusal
        assert process.returncode == 2
        [line] = [line for line in process.stderr.splitlines() if line.startswith("instructerc: error: ")]
        assert str(model) in line and "trust_remote_code" in line
        assert not out.exists()


def test_the_flag_alone_turns_remote_code_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from instructerc.modeling import model_dir

    model = booby_trapped(tmp_path / "model", tmp_path / "marker", "llama")
    asked: list[bool] = []

    def tokenizer(source: str, trust_remote_code: bool = False):
        asked.append(trust_remote_code)
        raise OSError("stop here")

    monkeypatch.setattr(model_dir, "load_tokenizer", tokenizer)
    for flag in (False, True):
        with pytest.raises(model_dir.InputError, match="stop here"):
            model_dir.load_model(model, trust_remote_code=flag)
    assert asked == [False, True]
    assert json.loads((model / MANIFEST).read_text(encoding="utf-8"))["backbone"]["trust_remote_code"] is True


def test_a_hub_backbone_missing_offline_is_one_clear_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = tiny_model_dir(tmp_path / "model", MELD)
    Manifest(backbone=BackboneConfig(model="no-such-org/no-such-model-xyz"), method="lora").save(model)
    # Present and whole: the backbone is what fails.
    (model / "adapter_config.json").write_text("{}", encoding="utf-8")
    save_file({}, str(model / "adapter_model.safetensors"))
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(DIALOGUE) + "\n", encoding="utf-8")

    process = run_process(
        "predict",
        "--input",
        source,
        "--output",
        tmp_path / "o.jsonl",
        "--model",
        model,
        "--no-progress",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )

    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    [line] = process.stderr.splitlines()
    assert (
        line.startswith(f"instructerc: error: {model}: cannot load")
        and "'no-such-org/no-such-model-xyz'" in line
        and "Hugging Face cache" in line
    )
