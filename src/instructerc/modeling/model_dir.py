"""The model directory: everything inference needs, and nothing else.

Layout: ``instructerc.json`` (format, backbone, fine-tuning method), ``prompting.json`` (template,
label set, limits), the weights (a peft LoRA adapter, or a full checkpoint), the tokenizer,
``demonstrations.*`` when the template shows demonstrations, and the model card ``README.md``
with ``training_config.yaml`` and ``dev_metrics.json`` beside it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from instructerc.errors import InputError
from instructerc.files import atomic_write
from instructerc.modeling.backbone import BackboneConfig, load_causal_lm, load_tokenizer, resolve_model

MANIFEST = "instructerc.json"
FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    backbone: BackboneConfig
    method: str  # "lora" or "full"
    format: int = FORMAT

    def save(self, directory: Path) -> None:
        with atomic_write(directory / MANIFEST) as handle:
            json.dump({"format": self.format, "method": self.method, "backbone": asdict(self.backbone)}, handle, indent=2)

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        file = directory / MANIFEST
        if not file.is_file():
            raise InputError(f"not an instructerc model directory (no {MANIFEST})", path=directory)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            return cls(backbone=BackboneConfig(**data["backbone"]), method=data["method"], format=int(data["format"]))
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"malformed manifest: {error}", path=file) from None


def write_model_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Build a model directory in a staging folder and swap it in whole, so a crash midway never
    leaves a broken model where a good one was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(staging)
        # mkdtemp (and some writers) create owner-only entries; a model directory is meant to be shared.
        staging.chmod(0o755)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_model(directory: Path, device: Any = "cpu", merge: bool = True, dtype: str = "auto") -> tuple[Any, Any, Manifest]:
    """(model in eval mode on ``device``, tokenizer, manifest) from a model directory.

    A LoRA adapter is merged into the base weights by default: inference then costs exactly
    what the base model costs. ``dtype`` is the inference precision (``auto``: see
    :mod:`instructerc.modeling.precision`), whatever precision the model was trained in.
    """
    manifest = Manifest.load(directory)
    # An adapter-only directory (the shipped default model) uses its backbone's tokenizer.
    has_tokenizer = any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    source = str(directory) if has_tokenizer else resolve_model(manifest.backbone)
    tokenizer = load_tokenizer(source, trust_remote_code=manifest.backbone.trust_remote_code)
    if manifest.method == "lora":
        from peft import PeftModel

        base = load_causal_lm(resolve_model(manifest.backbone), manifest.backbone, device, dtype)
        model = PeftModel.from_pretrained(base, str(directory))
        if merge:
            model = model.merge_and_unload()
    else:
        model = load_causal_lm(str(directory), manifest.backbone, device, dtype)
    return model.to(device).eval(), tokenizer, manifest
