"""The model directory: everything inference needs, and nothing else.

Layout: ``instructerc.json`` (format, backbone, fine-tuning method), ``prompting.json`` (template,
label set, limits), the weights (a peft LoRA adapter, or a full checkpoint), the tokenizer,
``demonstrations.*`` when the template shows demonstrations, and the model card ``README.md``
with ``training_config.yaml`` and ``dev_metrics.json`` beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from instructerc.errors import InputError
from instructerc.files import atomic_write, replace_directory
from instructerc.modeling.backbone import BackboneConfig, load_causal_lm, load_tokenizer, resolve_model

MANIFEST = "instructerc.json"
DEV_METRICS = "dev_metrics.json"  # the dev scores the checkpoint was selected on
TRAINING_CONFIG = "training_config.yaml"
FORMAT = 1

log = logging.getLogger(__name__)


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
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_model(
    directory: Path, device: Any = "cpu", merge: bool = True, dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any, Manifest]:
    """(model in eval mode on ``device``, tokenizer, manifest) from a model directory.

    A LoRA adapter is merged into the base weights by default: inference then costs exactly
    what the base model costs. ``dtype`` is the inference precision (``auto``: see
    :mod:`instructerc.modeling.precision`), whatever precision the model was trained in.

    ``trust_remote_code`` is the caller's decision alone (``--trust-remote-code``): a model
    directory may come from anywhere, so what its manifest asks for never turns on the
    execution of its Python files.
    """
    manifest = Manifest.load(directory)
    if manifest.backbone.trust_remote_code and not trust_remote_code:
        log.warning(
            "%s asks for trust_remote_code; it stays off (pass --trust-remote-code if you trust the code of this model)",
            directory / MANIFEST,
        )
    backbone = replace(manifest.backbone, trust_remote_code=trust_remote_code)
    with _loading(directory, backbone):
        tokenizer = load_tokenizer(tokenizer_source(directory, backbone), trust_remote_code=trust_remote_code)
        if manifest.method == "lora":
            from peft import PeftModel

            base = load_causal_lm(resolve_model(backbone), backbone, device, dtype)
            model = PeftModel.from_pretrained(base, str(directory))
            if merge:
                model = model.merge_and_unload()
        else:
            model = load_causal_lm(str(directory), backbone, device, dtype)
    return model.to(device).eval(), tokenizer, manifest


def tokenizer_source(directory: Path, backbone: BackboneConfig | None = None) -> str:
    """Where a model directory's tokenizer loads from: the directory, or for an adapter-only one
    (the shipped default model) its backbone (by default the one its manifest names)."""
    if any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return str(directory)
    return resolve_model(backbone if backbone is not None else Manifest.load(directory).backbone)


@contextlib.contextmanager
def _loading(directory: Path, backbone: BackboneConfig) -> Iterator[None]:
    """Loading failures as one line naming the model directory: a backbone that is neither a
    local folder nor in the Hugging Face cache (offline), code that needs --trust-remote-code,
    missing or corrupt files."""
    from safetensors import SafetensorError  # a truncated or corrupt weights file

    try:
        yield
    except (OSError, ValueError, SafetensorError) as error:
        if isinstance(error, InputError):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, SafetensorError):
            problem = f"a weights file of the model or its backbone is corrupt or cut short ({reason[:200]})"
            raise InputError(problem, path=directory) from None
        if "trust_remote_code" in reason:
            raise InputError(
                "this model needs its own Python code to load, which runs only with --trust-remote-code "
                "(trust_remote_code): pass it only if you trust the files of this model",
                path=directory,
            ) from None
        local = Path(backbone.model).expanduser().exists()
        what = (
            "its backbone"
            if local
            else f"its backbone '{backbone.model}' (not a local folder, so it must be in the Hugging Face cache or downloadable)"
        )
        raise InputError(f"cannot load the model or {what}: {reason[:400]}", path=directory) from None
