"""Training and prediction across processes, as users launch them: inputs that used to hang a run
or end it with a traceback on every process."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from instructerc.errors import InputError
from instructerc.inference.sharding import Shard, merge_parts, part_path
from instructerc.labels.benchmarks import MELD
from instructerc.prompts.templates import TemplateConfig
from instructerc.training.batches import steps
from instructerc.training.fsdp import load_sharded, save_sharded
from test_predict_processes import predict, write_input
from tiny import tiny_model_dir


def test_a_global_batch_smaller_than_the_processes_is_refused_not_a_hang():
    # batch_size 1 on 2 processes: process 1 had no example in any step and skipped the backward
    # whose gradient all-reduce process 0 waited in, for ever.
    with pytest.raises(InputError, match="smaller than the 2 processes") as error:
        steps(list(range(10)), 1, 2)
    assert error.value.field == "optim.batch_size"
    assert steps(list(range(5)), 2, 2) == [[0, 1], [2, 3]]  # a last batch too small is still dropped


class Adapter(torch.nn.Module):
    """Stands in for a model's trainable weights (the frozen backbone is not in a checkpoint)."""

    def __init__(self, rank: int, modules: tuple[str, ...] = ("q", "v")) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleDict({name: torch.nn.Linear(8, rank, bias=False) for name in modules})


def sharded_checkpoint(directory: Path) -> Path:
    with warnings.catch_warnings():  # one process, no process group: torch says so
        warnings.simplefilter("ignore")
        save_sharded(directory, Adapter(4))
    return directory


def load(directory: Path, model: torch.nn.Module) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_sharded(directory, model)


def test_a_sharded_checkpoint_loads_into_the_model_it_was_written_from(tmp_path):
    saved = Adapter(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_sharded(tmp_path / "ckpt", saved)
    loaded = Adapter(4)
    load(tmp_path / "ckpt", loaded)
    assert torch.equal(loaded.layers["q"].weight, saved.layers["q"].weight)


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (Adapter(8), r"2 of another shape, e\.g\. layers\.q\.weight \(4x8 saved, 8x8 now\)"),
        (Adapter(4, ("q",)), r"1 not trainable in this model, e\.g\. layers\.v\.weight"),
        (Adapter(4, ("q", "v", "o")), r"1 missing, e\.g\. layers\.o\.weight"),
    ],
)
def test_a_forced_resume_whose_shards_do_not_fit_is_one_error_naming_the_checkpoint(tmp_path, model, problem):
    # Under --force with another LoRA rank or target modules: a CheckpointException traceback on
    # every process, or (weights the model lacks) the rest loaded without a word.
    directory = sharded_checkpoint(tmp_path / "ckpt")
    with pytest.raises(InputError, match=problem) as error:
        load(directory, model)
    assert error.value.path == str(directory)
    assert "do not fit the model this recipe builds" in error.value.message


def test_a_shard_file_cut_short_or_missing_is_named(tmp_path):
    directory = sharded_checkpoint(tmp_path / "ckpt")
    shard = next(directory.glob("*.distcp"))
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(InputError, match=rf"shard file cut short \(100 bytes of at least {size}\)") as error:
        load(directory, Adapter(4))
    assert error.value.path == str(shard)
    shard.unlink()
    with pytest.raises(InputError, match="a shard file of this checkpoint is missing") as error:
        load(directory, Adapter(4))
    assert error.value.path == str(shard)


def test_a_damaged_checkpoint_index_is_named(tmp_path):
    directory = sharded_checkpoint(tmp_path / "ckpt")
    index = directory / ".metadata"
    index.write_bytes(index.read_bytes()[:50])
    with pytest.raises(InputError, match="corrupt checkpoint file") as error:
        load(directory, Adapter(4))
    assert error.value.path == str(index)


def test_parts_of_a_stream_output_go_to_the_working_directory_under_the_run_name(tmp_path, monkeypatch):
    # Beside /dev/stdout they were written into /dev (root only), beside /dev/fd/1 nowhere at all.
    monkeypatch.chdir(tmp_path)
    for stream in (Path("/dev/stdout"), Path("/dev/fd/1"), Path("/dev/null")):
        assert part_path(stream, Shard(1, 2, run="abc")) == tmp_path / f".instructerc-{stream.name}-abc.part-00001-of-00002"
    assert part_path(tmp_path / "out.jsonl", Shard(1, 2, run="abc")) == tmp_path / ".out.jsonl.part-00001-of-00002"
    part_path(Path("/dev/null"), Shard(0, 2, run="abc")).write_text("a1\n", encoding="utf-8")
    part_path(Path("/dev/null"), Shard(1, 2, run="abc")).write_text("b1\n", encoding="utf-8")
    merge_parts(Path("/dev/null"), Shard(0, 2, run="abc"), [1, 1])
    assert list(tmp_path.iterdir()) == []  # merged, and the parts removed


def test_two_processes_predict_to_stdout_as_one_process_writes_a_file(tmp_path):
    model = tiny_model_dir(tmp_path / "model", MELD, TemplateConfig(name="dialogue-stream", demonstration=False))
    source = write_input(tmp_path / "in.jsonl", 5)
    one = predict(model, source, tmp_path / "one.jsonl", 1)
    two = predict(model, source, Path("/dev/fd/1"), 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout == (tmp_path / "one.jsonl").read_text(encoding="utf-8")
    assert "wrote 5 dialogues" in two.stderr


class SecondProcess:
    """``torch.distributed`` as process 1 of a run sees it."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def is_initialized() -> bool:
        return True

    @staticmethod
    def get_rank() -> int:
        return 1


def test_an_unwritable_embedding_cache_is_warned_about_by_the_first_process_only(tmp_path, capsys, monkeypatch):
    # Every process of a torchrun training embeds the same texts: each printed the same warning.
    import numpy as np

    from instructerc.retrieval.cache import cached_array

    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder goes", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "torch.distributed", SecondProcess())
    array, cached = cached_array(blocked / "embeddings", "k", lambda: np.ones((2, 3), dtype=np.float32), rows=2)
    assert array.shape == (2, 3) and not cached
    assert "warning" not in capsys.readouterr().err


def test_a_global_batch_smaller_than_the_processes_is_refused_before_the_model_loads(tiny_data, backbone, tmp_path) -> None:
    from instructerc.data.registry import label_set_of, load_dialogues
    from instructerc.prompts.setup import PromptSetup
    from instructerc.training.data_checks import check_stage_examples
    from test_training import recipe

    config = recipe(tiny_data, backbone, tmp_path / "run", optim__batch_size=1)
    train = load_dialogues(config.data.source(), "train")
    setup = PromptSetup(config.template, label_set_of(config.data.source()), config.max_length, config.retrieval)
    check_stage_examples(config, train, setup.builder(), 1, tmp_path)  # one process: fine
    with pytest.raises(InputError, match="smaller than the 2 processes"):
        check_stage_examples(config, train, setup.builder(), 2, tmp_path)
