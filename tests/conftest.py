"""Shared fixtures: where the benchmark data is, and small builders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

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
    """Run ``instructerc.cli.main.main`` in-process: ``run_cli("data", "stats", "meld", "--data", root)``."""
    from instructerc.cli.main import main

    def run(*argv: str | Path) -> CliRun:
        capsys.readouterr()
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliRun(code=code, out=captured.out, err=captured.err)

    return run


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
