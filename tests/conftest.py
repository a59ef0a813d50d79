"""Shared fixtures: where the benchmark data is, and small builders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import tiny

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items) -> None:
    # Tests on the real benchmark data carry the ``data`` marker, so a checkout without the
    # (licensed, never committed) data deselects them explicitly instead of skipping silently.
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared benchmark data (``../shared/data`` beside the checkout)."""
    if not (SHARED_DATA / "meld").is_dir():
        pytest.fail(
            f"benchmark data not found at {SHARED_DATA}: place the MELD/EmoryNLP/COSMIC files there, "
            "or leave these tests out with -m 'not slow and not data'",
            pytrace=False,
        )
    return SHARED_DATA


@dataclass(frozen=True)
class CliRun:
    """What one in-process ``instructerc`` run returned and printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """Run ``instructerc.cli.main.main`` in-process: ``run_cli("data", "stats", "--dataset", "meld", "--data", root)``."""
    from instructerc.cli.main import main

    def run(*argv: str | Path) -> CliRun:
        capsys.readouterr()
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliRun(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if the run gets as far as loading the tokenizer or the model."""
    from instructerc.modeling import backbone

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(backbone, "load_tokenizer", loaded)
    monkeypatch.setattr(backbone, "load_causal_lm", loaded)


@pytest.fixture(autouse=True)
def one_thread_for_tiny_models(request: pytest.FixtureRequest):
    """Tiny models run faster on one thread: their matrices are too small to split, and a second
    thread only adds synchronisation. Tests of the real models (marked slow) keep every core."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_CPU_BF16: dict[str, bool | None] = {"native": False}  # None: ask the real CPU


@pytest.fixture(scope="session", autouse=True)
def pinned_cpu_capabilities():
    """The CPU's bf16 capability as the current test pins it (see ``pinned_cpu_precision``);
    session-wide, so models loaded by session fixtures see the pinned CPU too."""
    from instructerc.modeling import precision

    real = precision.cpu_capabilities

    def pinned() -> dict:
        native = _CPU_BF16["native"]
        return real() if native is None else {"avx512_bf16": native, "amx_bf16": native}

    precision.cpu_capabilities = pinned
    yield
    precision.cpu_capabilities = real


@pytest.fixture(autouse=True)
def pinned_cpu_precision(request: pytest.FixtureRequest):
    """So that a test means the same on every machine: a CPU without native bf16 by default
    (``auto`` is float32, and exactness tests compare float32 results), one with it for tests
    marked ``native_bf16``; tests of the real models (marked slow) see the real CPU."""
    if request.node.get_closest_marker("slow"):
        _CPU_BF16["native"] = None
    else:
        _CPU_BF16["native"] = request.node.get_closest_marker("native_bf16") is not None
    yield
    _CPU_BF16["native"] = False


# A tiny JSONL dataset and backbone, built once per test module that asks for them.
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    tiny.write_split(root / "train.jsonl", 24, seed=1)
    tiny.write_split(root / "dev.jsonl", 6, seed=2)
    # The test split is deliberately unreadable: training must never open it.
    (root / "test.jsonl").write_text("this is not json\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    return tiny.tiny_backbone(tmp_path_factory.mktemp("backbone"))
