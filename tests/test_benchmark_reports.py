"""The benchmarks' ``--json`` files: written atomically, with the arguments and the machine; and
the retrieval, cost-model and service benchmarks run their smallest configuration and write them."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from instructerc.labels.benchmarks import MELD
from test_retrieval import FakeEncoder
from tiny import tiny_model_dir

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


def test_retrieval_benchmark_writes_its_figures(data_root, tmp_path, monkeypatch):
    from instructerc.retrieval.encoder import SentenceEncoder

    # A fake encoder in place of all-MiniLM-L6-v2: the machinery, not the embeddings, is tested here.
    monkeypatch.setattr(SentenceEncoder, "load", classmethod(lambda cls, name, *a, **k: FakeEncoder()))
    out = tmp_path / "retrieval.json"
    assert benchmark("retrieval_index").main(["--data", str(data_root), "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    report = read(out)
    assert report["arguments"]["data"] == str(data_root)
    assert report["encoder"] == "fake@1" and report["train_utterances"] > 0 and report["dev_utterances"] > 0
    assert report["first_build"]["state"] == "cold" and report["cached_build_seconds"] >= 0
    assert set(report["dev_demonstration_label_equals_gold"]) == {"nearest", "same-label"}
    plain = report["dev_plain_nearest_label_equals_gold"]
    assert plain["all_tie_breaks_low"] <= plain["first_of_tied"] <= plain["all_tie_breaks_high"]
    assert 0 < report["dev_majority_label"]["rate"] <= 1


def test_cost_model_benchmark_writes_its_figures(data_root, tmp_path):
    model = tiny_model_dir(tmp_path / "model", MELD)
    out = tmp_path / "cost.json"
    benchmark("score_cost_model").main(
        ["--model", str(model), "--data", str(data_root), "--dialogues", "2", "--row-tokens", "256", "512", "--json", str(out)]
    )
    report = read(out)
    assert report["arguments"]["row_tokens"] == [256, 512] and report["arguments"]["dialogues"] == 2
    assert report["template"] == "dialogue-prefix" and report["prompts"] > 0 and report["naive_multiply_adds_per_layer"] > 0
    assert [row["row_tokens"] for row in report["rows"]] == [256, 512]
    for row in report["rows"]:
        assert row["rows"] > 0 and row["naive_over_exact"] >= row["naive_over_dense"] > 0


def test_service_benchmark_writes_its_figures(tmp_path):
    out = tmp_path / "serve.json"
    code = benchmark("serve_load").main(
        # A window far shorter than a turn: every client is still measured on its first turn (a
        # loaded machine once ended a 1-second window before any turn was sent).
        ["--seconds", "0.01", "--warmup", "0", "--clients", "2", "--threads", "1", "--startup-timeout", "120", "--json", str(out)]
    )
    report = read(out)
    assert code == 0
    assert report["arguments"]["clients"] == 2 and report["arguments"]["workload"] == "conversation"
    assert report["model_description"].startswith("tiny")
    assert [(mode["mode"], mode["turn_scoring"]) for mode in report["modes"]] == [("cache", "cached"), ("rescore", "rescoring")]
    for mode in report["modes"]:
        assert mode["errors"] == 0 and mode["requests"] >= 2 and mode["requests_per_second"] > 0 and mode["p50_ms"] <= mode["p99_ms"]
        assert mode["mean_ms_by_turn"]["1"] > 0
    assert report["throughput_ratio"] > 0


def test_service_benchmark_grows_long_conversations_and_reports_latency_by_turn(tmp_path):
    out = tmp_path / "long.json"
    code = benchmark("serve_load").main(
        ["--workload", "long", "--turns", "12", "--clients", "1", "--threads", "1", "--modes", "cache", "--json", str(out)]
    )
    report = read(out)
    assert code == 0
    [mode] = report["modes"]
    assert mode["requests"] == 12 and sorted(mode["mean_ms_by_turn"], key=int) == [str(k) for k in range(1, 13)]
    assert mode["turn_cache_conversations_at_end"] == 2 and mode["turn_cache_bytes_at_end"] > 0  # the warm-up's and the measured one
