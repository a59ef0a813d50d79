"""Retrieval with damaged caches and saved pools: recomputed, or refused naming the file, line and field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig, load_pool, save_pool
from instructerc.retrieval.retriever import DemonstrationRetriever
from test_retrieval import DEV, TRAIN, FakeEncoder, retriever


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


CACHE_DAMAGE = {
    "cut short": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "not an npy file": lambda good: b"garbage",
    "too few rows": lambda good: npy_bytes(np.zeros((3, 32), np.float32)),
    "strings": lambda good: npy_bytes(np.array(["a", "b"])),
}


@pytest.mark.parametrize("damage", sorted(CACHE_DAMAGE))
def test_a_damaged_cache_file_is_computed_again_and_replaced(tmp_path: Path, damage: str) -> None:
    config = RetrievalConfig(encoder="fake", cache_dir=str(tmp_path / "cache"))
    encoder = FakeEncoder()
    cold = DemonstrationIndex.build(TRAIN, encoder, config)
    [file] = (tmp_path / "cache" / "embeddings").glob("*.npy")
    file.write_bytes(CACHE_DAMAGE[damage](file.read_bytes()))

    again = DemonstrationIndex.build(TRAIN, encoder, config)
    assert not again.was_cached and len(encoder.calls) == 2
    np.testing.assert_array_equal(again.embeddings, cold.embeddings)
    assert DemonstrationIndex.build(TRAIN, encoder, config).was_cached  # the file was replaced


def test_an_unwritable_cache_folder_is_skipped_with_one_warning(tmp_path: Path, capsys) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be", encoding="utf-8")
    r = retriever(tmp_path)  # its cache is tmp_path / "cache"
    assert len(r.demonstrations(DEV)) == sum(len(d) for d in DEV)
    r.demonstrations(DEV[:1])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot write the embedding cache" in line]
    assert len(warnings) == 1 and str(blocked / "embeddings") in warnings[0]


def test_k_zero_finds_nothing(tmp_path: Path) -> None:
    assert all(hits == [] for hits in retriever(tmp_path).neighbours(DEV, k=0).values())


# --- saved pools -------------------------------------------------------------------------------------


def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    save_pool(retriever(tmp_path).index, directory)
    return directory


def edit_line(directory: Path, number: int, change) -> None:
    file = directory / "demonstrations.jsonl"
    lines = file.read_text(encoding="utf-8").split("\n")
    lines[number - 1] = change(lines[number - 1])
    file.write_text("\n".join(lines), encoding="utf-8")


def without(key: str):
    return lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != key})


def setting(key: str, value):
    return lambda line: json.dumps({**json.loads(line), key: value})


POOL_DAMAGE = {
    "texts missing": (lambda d: (d / "demonstrations.jsonl").unlink(), "demonstrations.jsonl", None, None, "missing"),
    "embeddings missing": (lambda d: (d / "demonstrations.npy").unlink(), "demonstrations.npy", None, None, "missing"),
    "texts empty": (lambda d: (d / "demonstrations.jsonl").write_text(""), "demonstrations.jsonl", 1, "encoder", "no header"),
    "header without encoder": (lambda d: edit_line(d, 1, lambda _: "{}"), "demonstrations.jsonl", 1, "encoder", "no header"),
    "a line cut short": (lambda d: edit_line(d, 4, lambda line: line[:20]), "demonstrations.jsonl", 4, None, "not JSON"),
    "a line not an object": (lambda d: edit_line(d, 4, lambda _: "[1, 2]"), "demonstrations.jsonl", 4, None, "not a JSON object"),
    "a label missing": (lambda d: edit_line(d, 5, without("label")), "demonstrations.jsonl", 5, "label", "missing"),
    "a label null": (lambda d: edit_line(d, 5, setting("label", None)), "demonstrations.jsonl", 5, "label", "non-empty string"),
    "a text not a string": (lambda d: edit_line(d, 6, setting("text", 5)), "demonstrations.jsonl", 6, "text", "must be a string"),
    "not UTF-8": (lambda d: (d / "demonstrations.jsonl").write_bytes(b"\xff\xfe{}"), "demonstrations.jsonl", None, None, "UTF-8"),
    "embeddings cut short": (
        lambda d: (d / "demonstrations.npy").write_bytes((d / "demonstrations.npy").read_bytes()[:200]),
        "demonstrations.npy",
        None,
        None,
        "damaged",
    ),
    "embeddings of another pool": (
        lambda d: (d / "demonstrations.npy").write_bytes(npy_bytes(np.zeros((7, 32), np.float16))),
        "demonstrations.npy",
        None,
        None,
        "not from one pool",
    ),
    "embeddings one-dimensional": (
        lambda d: (d / "demonstrations.npy").write_bytes(npy_bytes(np.zeros(60, np.float16))),
        "demonstrations.npy",
        None,
        None,
        "2-D",
    ),
}


@pytest.mark.parametrize("damage", sorted(POOL_DAMAGE))
def test_a_damaged_saved_pool_is_refused_naming_file_line_and_field(tmp_path: Path, damage: str) -> None:
    spoil, name, line, field, message = POOL_DAMAGE[damage]
    directory = saved(tmp_path)
    spoil(directory)
    with pytest.raises(InputError, match=message) as refused:
        load_pool(directory)
    assert (refused.value.path, refused.value.line, refused.value.field) == (str(directory / name), line, field)


def test_a_pool_with_an_empty_text_list_is_refused(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    header = (directory / "demonstrations.jsonl").read_text(encoding="utf-8").split("\n")[0]
    (directory / "demonstrations.jsonl").write_text(header + "\n", encoding="utf-8")
    (directory / "demonstrations.npy").write_bytes(npy_bytes(np.zeros((0, 32), np.float16)))
    with pytest.raises(InputError, match="no demonstrations"):
        load_pool(directory)


def test_texts_with_unicode_line_separators_survive_a_saved_pool(tmp_path: Path) -> None:
    # json.dumps leaves U+2028, U+2029 and NEL unescaped; they are not line ends of the file.
    texts = ["wait\x85 what", "one\u2028two", "three\u2029four", "plain"]
    pool = [Dialogue(str(i), "meld", "train", (Utterance("S0", text, "joy"),)) for i, text in enumerate(texts)]
    save_pool(retriever(tmp_path, dialogues=pool).index, tmp_path / "model")
    assert [e.text for e in load_pool(tmp_path / "model").entries] == texts


def test_extra_keys_and_a_trailing_blank_line_are_accepted(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    edit_line(directory, 3, setting("note", "added by hand"))
    with (directory / "demonstrations.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    assert len(load_pool(directory)) == 60


class WideEncoder(FakeEncoder):
    """An encoder of another width than the pool's, that says so as SentenceEncoder does."""

    def __init__(self) -> None:
        super().__init__("wide@1", dim=48)
        self.dimension = 48


def test_a_pool_from_another_encoder_is_refused_when_loaded_and_when_searched(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    config = RetrievalConfig(encoder="wide", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InputError, match="48") as refused:
        DemonstrationRetriever(load_pool(directory), WideEncoder(), config)
    assert refused.value.path == str(directory / "demonstrations.npy") and refused.value.field == "retrieval.encoder"

    silent = FakeEncoder("other@1", dim=48)  # says nothing of its width: caught at the first search
    with pytest.raises(InputError, match="another encoder"):
        DemonstrationRetriever(load_pool(directory), silent, config).demonstrations(DEV)


def test_a_retriever_not_caching_queries_writes_nothing_and_finds_the_same(tmp_path: Path) -> None:
    cached = retriever(tmp_path / "a")
    uncached = retriever(tmp_path / "b")
    uncached.cache_queries = False
    before = sorted((tmp_path / "b" / "cache").rglob("*.npy"))  # the pool's own embeddings
    assert uncached.demonstrations(DEV) == cached.demonstrations(DEV)
    assert sorted((tmp_path / "b" / "cache").rglob("*.npy")) == before
    assert len(list((tmp_path / "a" / "cache").rglob("*.npy"))) == len(before) + 1


def test_the_service_does_not_cache_its_requests_embeddings(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from instructerc.service.app import create_app

    searcher = retriever(tmp_path)
    create_app(SimpleNamespace(retriever=searcher, label_set=None, caches_turns=False))
    assert searcher.cache_queries is False
