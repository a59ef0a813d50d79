"""Worker threads share the intra-op threads, return every result, and leave PyTorch as they found it."""

from __future__ import annotations

import threading

import pytest
import torch

from instructerc.errors import InputError
from instructerc.inference.parallel import completed, default_workers


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_one_worker_runs_in_order_here(two_threads):
    seen = []
    results = list(completed(lambda x: seen.append((threading.get_ident(), torch.get_num_threads())) or x * x, range(5), workers=1))
    assert results == [0, 1, 4, 9, 16]
    assert seen == [(threading.get_ident(), 2)] * 5


def test_workers_split_the_threads_and_restore_them(two_threads):
    seen = []

    def work(x: int) -> int:
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return x * x

    assert sorted(completed(work, range(20), workers=2)) == [x * x for x in range(20)]
    assert {threads for _, threads in seen} == {1}
    assert threading.get_ident() not in {ident for ident, _ in seen}
    assert torch.get_num_threads() == 2
    assert default_workers() == 2


def test_a_failing_item_raises_and_restores_the_threads(two_threads):
    def work(x: int) -> int:
        if x == 3:
            raise ValueError("item 3")
        return x

    with pytest.raises(ValueError, match="item 3"):
        list(completed(work, range(8), workers=2))
    assert torch.get_num_threads() == 2


def test_the_predictor_scores_the_same_with_two_workers(tmp_path_factory, two_threads):
    from instructerc.inference.predictor import InferenceConfig, Predictor
    from instructerc.labels.benchmarks import MELD
    from instructerc.prompts.templates import TemplateConfig
    from test_inference import dialogue
    from tiny import tiny_model_dir

    directory = tiny_model_dir(tmp_path_factory.mktemp("model"), MELD, TemplateConfig(name="instructerc", demonstration=False, window=3))
    dialogues = [dialogue(n, f"d{n}") for n in (9, 7, 3, 5)]
    results = {}
    for workers in (1, 2):
        # Small rows, so there are several batches to share out.
        predictor = Predictor.from_directory(directory, config=InferenceConfig(workers=workers, max_tokens=256, batch_tokens=256))
        assert predictor.config.worker_count("cpu") == workers and predictor.config.worker_count("cuda") == 1
        results[workers] = [p for ps in predictor.predict(dialogues) for p in ps]
    for a, b in zip(results[1], results[2], strict=True):
        assert a.label == b.label
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
    with pytest.raises(InputError, match="workers"):
        InferenceConfig(workers=0)
