"""The optional extras of pyproject.toml: which one installs each lazily imported library, and a
check, before a command imports any of them, that the extra it needs is installed."""

from __future__ import annotations

import importlib.util

from instructerc.errors import InputError

# The import names of each extra's libraries, as pyproject.toml lists them (huggingface_hub comes
# with transformers but is imported directly too).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": (
        "torch",
        "numpy",
        "transformers",
        "huggingface_hub",
        "safetensors",
        "peft",
        "accelerate",
        "sentence_transformers",
        "gguf",
        "sklearn",
        "matplotlib",
    ),
    "serve": ("fastapi", "uvicorn"),
}
# Libraries an extra installs as dependencies of its own, which a command may be the first to import.
_DEPENDENCIES = {"tokenizers": "train", "scipy": "train", "starlette": "serve", "pydantic": "serve"}
EXTRA_OF_MODULE: dict[str, str] = {**_DEPENDENCIES, **{module: extra for extra, modules in EXTRA_MODULES.items() for module in modules}}


class MissingExtra(InputError):
    """A command needs an optional extra that is not installed: one line with the install command."""


def install_hint(extra: str) -> str:
    """How to install ``extra``; torch first, so that pip does not pick a CUDA build for a CPU machine."""
    if extra == "train":
        return "pip install torch (the build for your hardware, see README), then pip install 'instructerc[train]'"
    return f"pip install 'instructerc[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The libraries of ``extra`` that cannot be imported, found without importing any."""
    return [module for module in EXTRA_MODULES[extra] if importlib.util.find_spec(module) is None]


def require_extra(command: str, extra: str) -> None:
    """A :class:`MissingExtra` when ``extra`` is not fully installed. Checked before the first
    import: torch imported without numpy prints a warning of its own before any error of ours."""
    missing = missing_modules(extra)
    if missing:
        raise missing_extra(command, extra, missing)


def missing_extra(command: str, extra: str, missing: list[str]) -> MissingExtra:
    """The error for ``command`` run without ``extra``, whose ``missing`` libraries are not installed."""
    return MissingExtra(f"{command} needs the '{extra}' extra (not installed: {', '.join(missing)}): {install_hint(extra)}")
