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
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from instructerc.errors import InputError
from instructerc.files import atomic_write, followed_link, free_number, looks_like_path, replace_directory
from instructerc.modeling.backbone import (
    EMBEDDED_MODEL,
    BackboneConfig,
    check_positions,
    check_weight_indexes,
    index_shards,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
    saved_tensors,
)
from instructerc.modeling.default_model import MANIFEST
from instructerc.modeling.finetune import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_folder, attach_adapter

DEV_METRICS = "dev_metrics.json"  # the dev scores the checkpoint was selected on
TRAINING_CONFIG = "training_config.yaml"
FORMAT = 1
METHODS = ("lora", "full")
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
FULL_CONFIG = "config.json"
FULL_WEIGHTS = "model.safetensors"
FULL_WEIGHTS_INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map of its shards
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_FILE_FAULTS = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Manifest:
    backbone: BackboneConfig
    method: str  # "lora" or "full"
    format: int = FORMAT

    def save(self, directory: Path) -> None:
        backbone = replace(self.backbone, model=_recorded_model(self.backbone.model), cache_dir=_absolute(self.backbone.cache_dir))
        with atomic_write(directory / MANIFEST) as handle:
            json.dump({"format": self.format, "method": self.method, "backbone": asdict(backbone)}, handle, indent=2)

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        file = directory / MANIFEST
        if not file.is_file():
            raise InputError(_not_a_model_dir(directory), path=directory)
        try:
            data = json.loads(file.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise InputError(f"malformed manifest: {error}", path=file) from None
        try:
            return cls.from_data(data)
        except InputError as error:
            raise InputError(error.message, path=file, field=error.field) from None

    @classmethod
    def from_data(cls, data: Any) -> "Manifest":
        """The manifest ``data`` (parsed JSON) describes; an :class:`InputError` naming the key
        that is missing, unknown, of the wrong type or of a newer format."""
        from instructerc.config import from_mapping

        if not isinstance(data, dict):
            raise InputError(f"malformed manifest: a JSON object with format, method and backbone, not {type(data).__name__}")
        if "format" not in data:
            raise InputError("missing required key(s) ['format']")
        version = data["format"]
        if isinstance(version, bool) or not isinstance(version, int):
            raise InputError(f"the manifest format must be an integer, not {version!r}", field="format")
        # Checked before the other keys: a newer format may have keys this version does not know.
        if version > FORMAT:
            raise InputError(
                f"written by a newer instructerc (manifest format {version}; this version reads format {FORMAT}): upgrade instructerc",
                field="format",
            )
        if version < 1:
            raise InputError(f"unknown manifest format {version} (this version reads format {FORMAT})", field="format")
        manifest = from_mapping(cls, data)
        # Any other method would be loaded as full weights and fail far from its cause.
        if manifest.method not in METHODS:
            raise InputError(f"unknown fine-tuning method '{manifest.method}' (expected lora or full)", field="method")
        return manifest


def check_adapter_backbone(init_adapter: str, backbone: str) -> None:
    """Refuses, before any model loads, an ``init_adapter`` model directory trained on another
    backbone than ``backbone``: its weights belong to that model. Two local folders may hold one
    model moved or copied, so between folders the adapter's shapes decide as it loads, as they do
    for a bare peft folder, which records no backbone of ours."""
    folder = adapter_folder(init_adapter)
    if not (folder / MANIFEST).is_file():
        return
    trained_on = Manifest.load(folder).backbone.model
    if _is_folder(trained_on) and _is_folder(backbone):
        return
    if trained_on != backbone:
        raise InputError(
            f"the adapter was trained on the backbone '{trained_on}', and backbone.model is '{backbone}'",
            path=folder,
            field="finetune.init_adapter",
        )


def _is_folder(name: str) -> bool:
    return name != EMBEDDED_MODEL and (looks_like_path(name) or Path(name).expanduser().exists())


def _recorded_model(name: str) -> str:
    """The backbone as a manifest records it: a local folder by its absolute path, as a relative
    one would name another folder, or none, from any other working directory. Symlinks are kept."""
    local = Path(name).expanduser()
    if name == EMBEDDED_MODEL or not local.exists():
        return name  # a Hub id
    return os.path.abspath(local)


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(Path(path).expanduser())


def _not_a_model_dir(directory: Path) -> str:
    """Why ``directory``, which has no manifest, is no model directory, with what to pass instead."""
    if not directory.exists():
        name = str(directory)
        if name.count("/") == 1 and not looks_like_path(name) and not directory.is_symlink():
            # Read as a relative folder; it may be meant as a Hugging Face hub id (org/name).
            return (
                "no such model directory (nor is a Hugging Face hub id one: --model takes the folder 'instructerc train' "
                "writes, and a hub model is fine-tuned there as backbone.model)"
            )
        return "no such model directory"
    if (directory / MANIFEST).exists():
        return f"its {MANIFEST} is not a file"
    if not directory.is_dir():
        return f"is a file, not an instructerc model directory (a folder holding {MANIFEST}, written by 'instructerc train')"
    lacking = f"not an instructerc model directory (no {MANIFEST})"
    if (directory / "model" / MANIFEST).is_file():
        return f"{lacking}: it is a training run; its model is {directory / 'model'}"
    if all((directory / name).is_file() for name in ("state.json", "trainable.pt")) or (directory / "dev_metrics.json").is_file():
        return f"{lacking}: it is a training checkpoint; the run's model is its model/ folder (written when training ends)"
    if (directory / ADAPTER_CONFIG).is_file() or (directory / FULL_CONFIG).is_file():
        return (
            f"{lacking}: it is a bare Hugging Face model or adapter, which has no prompt template or label set; "
            "fine-tune it with 'instructerc train' (backbone.model), or pass the model folder that run writes"
        )
    return lacking


def write_model_dir(target: Path, fill: Callable[[Path], None], keep_earlier: bool = False) -> Path | None:
    """Build a model directory in a staging folder and swap it in whole, so a crash midway never
    leaves a broken model where a good one was.

    With ``keep_earlier``, an earlier directory at ``target`` that holds entries the new one does
    not (``evaluate``'s default ``eval-*`` folders, a user's notes) is kept whole beside it as
    ``NAME.earlier-N`` rather than deleted: those entries describe the earlier model, so they
    neither belong in the new one nor may vanish without a word. Returns where it was kept."""
    target = followed_link(target)  # staged beside the folder it replaces: a rename stays on one file system
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(staging)
        # mkdtemp (and some writers) create owner-only entries; a model directory is meant to be shared.
        staging.chmod(0o755)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        kept = _earlier_directory(target) if keep_earlier and _holds_more(target, staging) else None
        if kept is not None:
            target.rename(kept)
        replace_directory(staging, target)
        return kept
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _holds_more(earlier: Path, new: Path) -> bool:
    """Whether the folder ``earlier`` has an entry that ``new`` has not."""
    if not earlier.is_dir():
        return False
    names = {entry.name for entry in new.iterdir()}
    return any(entry.name not in names for entry in earlier.iterdir())


def _earlier_directory(target: Path) -> Path:
    def kept(number: int) -> Path:
        return target.with_name(f"{target.name}.earlier-{number}")

    return kept(free_number(lambda number: [kept(number)]))


def check_trust_remote_code(value: Any) -> None:
    """Refuse a ``trust_remote_code`` that is not a bool: Hugging Face tests it for truth, so a
    string such as ``"no"`` or ``"false"`` would let the model's own Python files run."""
    if not isinstance(value, bool):
        raise InputError(f"trust_remote_code must be True or False, got {value!r}", field="trust_remote_code")


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
    from instructerc.prompts.setup import PROMPTING_FILE

    check_trust_remote_code(trust_remote_code)
    manifest = Manifest.load(directory)
    max_length = check_model_dir(directory, manifest)
    if manifest.backbone.trust_remote_code and not trust_remote_code:
        log.warning(
            "%s asks for trust_remote_code; it stays off (pass --trust-remote-code if you trust the code of this model)",
            directory / MANIFEST,
        )
    backbone = replace(manifest.backbone, trust_remote_code=trust_remote_code)
    with _loading(directory, backbone):
        source = tokenizer_source(directory, backbone)
        tokenizer = _tokenizer_of(source, trust_remote_code)
        if manifest.method == "lora":
            base = load_causal_lm(resolve_model(backbone), backbone, device, dtype)
            model = attach_adapter(base, directory)
            if merge:
                model = model.merge_and_unload()
        else:
            model = load_causal_lm(str(directory), backbone, device, dtype, exact=True)
    check_vocabulary(directory, tokenizer, model, source)
    check_positions(model, max_length, path=directory / PROMPTING_FILE)
    return model.to(device).eval(), tokenizer, manifest


def _tokenizer_of(source: str, trust_remote_code: bool) -> Any:
    """The tokenizer loaded from ``source``; a failure caused by a damaged tokenizer file of a local
    folder names that file. transformers reads a file that is JSON but no tokenizer's (``{}``, a
    list, no ``model``) with a bare KeyError, AttributeError or Exception from deep inside."""
    try:
        return load_tokenizer(source, trust_remote_code=trust_remote_code)
    except (InputError, ImportError):
        raise
    except Exception as error:
        # The kinds a damaged file raises (tokenizers raises bare Exceptions); any other is no file's doing.
        damaged = damaged_tokenizer_file(Path(source)) if isinstance(error, _FILE_FAULTS) or type(error) is Exception else None
        if damaged is None:
            raise  # not the files' fault (remote code refused, an unreachable hub id): said by _loading
        file, problem = damaged
        raise InputError(f"a damaged tokenizer file: {problem}", path=file) from None


def damaged_tokenizer_file(folder: Path) -> tuple[Path, str] | None:
    """(file, what is wrong) for the first tokenizer file of ``folder`` that cannot be read as one."""
    from tokenizers import Tokenizer

    for name in _TOKENIZER_JSON:
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as error:
            return file, f"not JSON ({error})"
        if not isinstance(data, dict):
            return file, f"a JSON object expected, not {type(data).__name__}"
    file = folder / "tokenizer.json"
    if file.is_file():
        try:
            Tokenizer.from_file(str(file))
        except Exception as error:  # the tokenizers library raises bare Exceptions
            return file, f"not a tokenizer ({' '.join(str(error).split())[:200] or type(error).__name__})"
    return None


def check_vocabulary(directory: Path, tokenizer: Any, model: Any, source: str) -> None:
    """Refuses a tokenizer (loaded from ``source``) with ids past the model's embedding, i.e. the
    tokenizer of another model: its first such token would fail deep in the forward pass."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        files = [Path(source) / name for name in TOKENIZER_FILES if (Path(source) / name).is_file()]
        raise InputError(
            f"this tokenizer has {len(tokenizer)} tokens but the model of {directory} embeds only {rows}: it belongs to another model",
            path=files[0] if files else source,
        )


def tokenizer_source(directory: Path, backbone: BackboneConfig | None = None) -> str:
    """Where a model directory's tokenizer loads from: the directory, or for an adapter-only one
    (the shipped default model) its backbone (by default the one its manifest names)."""
    if has_tokenizer(directory):
        return str(directory)
    return resolve_model(backbone if backbone is not None else Manifest.load(directory).backbone)


def has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def check_model_dir(directory: Path, manifest: Manifest) -> int:
    """Refuse, naming what is wrong, a model directory that lacks what its form needs, before
    anything heavy loads. transformers and peft take a folder without their file for a Hub repo
    id and go online for it; instructerc downloads nothing.

    The forms: ``lora`` (the adapter files; the base weights and, without tokenizer files of its
    own, the tokenizer come from the backbone, embedded or another) and ``full`` (``config.json``
    and the whole weights; the backbone is only needed for a missing tokenizer). Returns the
    prompts' ``max_length``.
    """
    from instructerc.prompts.setup import PromptSetup

    setup = PromptSetup.load(directory)  # inference rebuilds its prompts from it: a damaged one fails now
    if manifest.method == "lora" or not has_tokenizer(directory):
        check_backbone_available(directory, manifest.backbone)
    for file in weight_files(directory, manifest.method):
        if not file.is_file():
            raise InputError(f"missing: {_WEIGHTS_OF[manifest.method]}", path=file)
        if file.suffix == ".safetensors":
            tensors = saved_tensors(file)  # a copy cut short is named here, not as a load failure of the folder
            if manifest.method == "full":
                check_float_weights(file, tensors)
    return setup.max_length


def check_float_weights(file: Path, tensors: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """Refuses a weight matrix stored as integers (an 8-bit export) beside a config that names no
    quantization: transformers would cast 12 to 12.0 where 0.12 was meant, and predict nonsense."""
    integers = sorted(name for name, (_, kind) in tensors.items() if name.endswith(".weight") and not kind.startswith(("F", "BF")))
    if not integers or _names_quantization(file.parent / FULL_CONFIG):
        return
    kind = tensors[integers[0]][1]
    raise InputError(
        f"{len(integers)} weight(s) are stored as integers (first: {integers[0]}, {kind}) and {FULL_CONFIG} names no "
        "quantization: save the model's weights in float32, bfloat16 or float16",
        path=file,
    )


def _names_quantization(config: Path) -> bool:
    try:
        data = json.loads(config.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False  # a damaged config is the load's to report
    return isinstance(data, dict) and data.get("quantization_config") is not None


_WEIGHTS_OF = {
    "lora": f"a LoRA model directory ({MANIFEST}: method lora) holds its adapter in {' and '.join(ADAPTER_FILES)}",
    "full": f"a fully fine-tuned model directory ({MANIFEST}: method full) holds {FULL_CONFIG} and its weights "
    f"({FULL_WEIGHTS}, or the shards {FULL_WEIGHTS_INDEX} lists)",
}


def weight_files(directory: Path, method: str) -> list[Path]:
    """The files the weights of a model directory of ``method`` load from."""
    if method == "lora":
        return [directory / name for name in ADAPTER_FILES]
    index = directory / FULL_WEIGHTS_INDEX
    if not index.is_file():
        return [directory / FULL_CONFIG, directory / FULL_WEIGHTS]
    return [directory / FULL_CONFIG, *(directory / shard for shard in index_shards(index))]


def check_backbone_available(directory: Path, backbone: BackboneConfig) -> None:
    """A backbone that is not the embedded one is a model folder or a Hugging Face hub id (loaded
    from the cache, or downloaded where the machine is online, as transformers does)."""
    if backbone.model == EMBEDDED_MODEL:
        return  # ships inside a package; resolve_model reports a missing one
    local = Path(backbone.model).expanduser()
    if local.exists():
        if not (local / FULL_CONFIG).is_file():
            raise InputError(f"its backbone folder {local} has no {FULL_CONFIG}: it is no Hugging Face model", path=directory)
        check_weight_indexes(local)
        for weights in sorted(local.glob("*.safetensors")):
            saved_tensors(weights)
        return
    if looks_like_path(backbone.model):
        where = "" if local.is_absolute() else f" (a relative path, read from the working directory {Path.cwd()})"
        raise InputError(
            f"its backbone folder {backbone.model} does not exist{where}: point backbone.model in {MANIFEST} at the backbone",
            path=directory,
            field="backbone.model",
        )


@contextlib.contextmanager
def _loading(directory: Path, backbone: BackboneConfig) -> Iterator[None]:
    """Loading failures as one line naming the model directory: a backbone that is neither a
    local folder nor in the Hugging Face cache (offline), code that needs --trust-remote-code,
    missing or corrupt files."""
    from huggingface_hub import errors as hub_errors
    from safetensors import SafetensorError  # a truncated or corrupt weights file

    # transformers' configs check their fields' types with this (huggingface_hub 1.0 and later).
    wrong_types = getattr(hub_errors, "StrictDataclassError", TypeError)
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
    except (TypeError, KeyError, AttributeError, ArithmeticError, wrong_types) as error:
        # transformers reads a config.json of wrong types (a list, a size as a string, 0 heads)
        # with these, from deep inside; any other cause is no file's doing and stays a traceback.
        fault = _config_fault(directory, backbone, error)
        if fault is None:
            raise
        raise fault from None
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError):
            raise  # a missing extra of instructerc's own, said by the CLI
        # transformers' own check for a library the model's config asks for (a quantization's).
        raise InputError(f"this model needs a library that is not installed: {_one_line(error)}", path=directory) from None


def _config_fault(directory: Path, backbone: BackboneConfig, error: BaseException) -> InputError | None:
    """The error naming the ``config.json`` (the model directory's, or its local backbone's) that
    made loading fail with ``error``; None when neither is to blame."""
    from transformers import AutoConfig

    folders = [directory, Path(backbone.model).expanduser()]
    for config in [folder / FULL_CONFIG for folder in folders if (folder / FULL_CONFIG).is_file()]:
        try:
            AutoConfig.from_pretrained(str(config.parent))
        except Exception as fault:  # what a config of wrong types raises varies (TypeError, KeyError...)
            if "trust_remote_code" not in str(fault):
                return InputError(f"not a usable model config ({_one_line(fault)})", path=config)
    if isinstance(error, ArithmeticError):  # sizes that do not divide (heads, hidden size)
        return InputError(f"the model its {FULL_CONFIG} describes cannot be built ({_one_line(error)})", path=directory)
    return None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
