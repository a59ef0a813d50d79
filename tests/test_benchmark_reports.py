"""The benchmarks' ``--json`` files: written atomically, with the arguments and the machine."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MACHINE = {"cpu_model", "cpu_count", "usable_cpus", "native_bf16", "torch", "torch_threads", "thread_env", "python", "platform"}


def benchmark(name: str):
    """A benchmark script as a module (they import their sibling ``_report`` as a script does)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def read(path: Path) -> dict:
    report = json.loads(path.read_text(encoding="utf-8"))
    assert set(report["machine"]) == MACHINE
    assert "json" not in report["arguments"]
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"
    return report


def test_the_report_holds_the_figures_the_arguments_and_the_machine(tmp_path, capsys):
    import argparse

    import numpy as np

    report = benchmark("_report")
    args = argparse.Namespace(data=Path("d"), dtypes=["float32"], json=tmp_path / "r.json", route="internal", steps=3)
    target = tmp_path / "deeper" / "r.json"
    report.write_json(target, {"rate": np.float64(2.5), "ratio": math.inf, "rows": [{"p50": float("nan")}]}, args, skip=("route",))
    written = read(target)
    assert written["arguments"] == {"data": "d", "dtypes": ["float32"], "steps": 3}
    assert written["rate"] == 2.5 and written["ratio"] is None and written["rows"] == [{"p50": None}]
    assert f"wrote {target}" in capsys.readouterr().out


def test_a_failed_report_leaves_the_earlier_file_whole(tmp_path, monkeypatch):
    import argparse

    report = benchmark("_report")
    target = tmp_path / "r.json"
    target.write_text("earlier\n", encoding="utf-8")
    monkeypatch.setattr(report, "machine", lambda: {"cpu_model": object()})
    monkeypatch.setattr(report, "plain", lambda value: value)  # so the object reaches json.dumps
    with pytest.raises(TypeError):
        report.write_json(target, {}, argparse.Namespace())
    assert target.read_text(encoding="utf-8") == "earlier\n"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(ValueError, match="own keys"):
        report.write_json(target, {"machine": 1}, argparse.Namespace())
