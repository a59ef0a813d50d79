"""Retrieval caches and saved pools that hold the wrong vectors: recomputed, or refused naming the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.errors import InputError
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig, load_pool, save_pool
from instructerc.retrieval.retriever import DemonstrationRetriever
from test_retrieval import DEV, TRAIN, FakeEncoder, retriever


class SizedEncoder(FakeEncoder):
    """A fake encoder that states its width, as SentenceEncoder does."""

    def __init__(self, identity: str = "fake@1") -> None:
        super().__init__(identity, dim=32)
        self.dimension = 32


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def unit(rows: int, width: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# Files of the right name and row count whose vectors are not the encoder's.
WRONG_VECTORS = {
    "NaN": lambda good: np.full_like(good, np.nan),
    "zeros": lambda good: np.zeros_like(good),
    "not unit length": lambda good: good * 3,
    "another width": lambda good: unit(len(good), 7),
}


@pytest.mark.parametrize("wrong", sorted(WRONG_VECTORS))
def test_a_cache_file_of_wrong_vectors_is_computed_again(tmp_path: Path, wrong: str) -> None:
    config = RetrievalConfig(encoder="fake", cache_dir=str(tmp_path / "cache"))
    encoder = SizedEncoder()
    cold = DemonstrationIndex.build(TRAIN, encoder, config)
    [file] = (tmp_path / "cache" / "embeddings").glob("*.npy")
    file.write_bytes(npy_bytes(WRONG_VECTORS[wrong](np.load(file))))

    again = DemonstrationIndex.build(TRAIN, encoder, config)
    assert not again.was_cached and len(encoder.calls) == 2
    np.testing.assert_array_equal(again.embeddings, cold.embeddings)
    assert DemonstrationIndex.build(TRAIN, encoder, config).was_cached


def test_a_cache_file_that_is_a_symlink_is_not_read_and_its_target_not_overwritten(tmp_path: Path) -> None:
    config = RetrievalConfig(encoder="fake", cache_dir=str(tmp_path / "cache"))
    encoder = FakeEncoder()
    cold = DemonstrationIndex.build(TRAIN, encoder, config)
    [file] = (tmp_path / "cache" / "embeddings").glob("*.npy")
    elsewhere = tmp_path / "elsewhere.npy"
    elsewhere.write_bytes(npy_bytes(unit(len(cold), 32, seed=3)))  # right shape, other vectors
    file.unlink()
    file.symlink_to(elsewhere)

    again = DemonstrationIndex.build(TRAIN, encoder, config)
    assert not again.was_cached
    np.testing.assert_array_equal(again.embeddings, cold.embeddings)
    np.testing.assert_array_equal(np.load(elsewhere), unit(len(cold), 32, seed=3))  # untouched
    assert not file.is_symlink() and DemonstrationIndex.build(TRAIN, encoder, config).was_cached


def test_a_cached_query_file_of_wrong_vectors_is_not_used(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    r = retriever(tmp_path, encoder=encoder)
    first = r.demonstrations(DEV)
    before = set((tmp_path / "cache" / "embeddings").glob("*.npy"))
    for file in before:  # the pool's and the queries' embeddings
        file.write_bytes(npy_bytes(np.zeros_like(np.load(file))))
    assert r.demonstrations(DEV) == first


def test_an_encoder_giving_nan_is_refused_naming_the_field_and_nothing_is_cached(tmp_path: Path) -> None:
    # The fake encoder divides by a zero norm for a text without words: a NaN row, which would
    # match nothing and silently leave its utterance without a demonstration.
    r = retriever(tmp_path)
    query = [Dialogue("q", "meld", "dev", (Utterance("S0", "okay", "joy"), Utterance("S1", " ", "joy")))]
    before = set((tmp_path / "cache").rglob("*.npy"))
    with pytest.raises(InputError, match="NaN or infinite embeddings for 1 of 2 texts") as refused:
        r.demonstrations(query)
    assert refused.value.field == "retrieval.encoder"
    assert set((tmp_path / "cache").rglob("*.npy")) == before


def test_a_pool_built_from_a_text_the_encoder_gives_nan_for_is_refused(tmp_path: Path) -> None:
    pool = TRAIN[:2] + [Dialogue("x", "meld", "train", (Utterance("S0", "", "joy"),))]
    with pytest.raises(InputError, match="NaN or infinite") as refused:
        retriever(tmp_path, dialogues=pool)
    assert refused.value.field == "retrieval.encoder"


# --- saved pools ----------------------------------------------------------------------------------


def saved(tmp_path: Path) -> tuple[Path, DemonstrationRetriever]:
    r = retriever(tmp_path)
    save_pool(r.index, tmp_path / "model")
    return tmp_path / "model", r


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.0])
def test_a_pool_with_a_nan_or_zero_vector_is_refused_naming_the_file_and_row(tmp_path: Path, value: float) -> None:
    directory, _ = saved(tmp_path)
    vectors = np.load(directory / "demonstrations.npy")
    vectors[5] = value
    (directory / "demonstrations.npy").write_bytes(npy_bytes(vectors))
    with pytest.raises(InputError, match="row 5, demonstration 6") as refused:
        load_pool(directory)
    assert refused.value.path == str(directory / "demonstrations.npy")


def test_a_pool_embedded_by_another_encoder_of_the_same_width_is_refused(tmp_path: Path) -> None:
    directory, r = saved(tmp_path)
    other = SizedEncoder("other@1")
    other.encode = lambda texts, batch_size=128, progress=False: unit(len(texts), 32, seed=len(texts))  # type: ignore[method-assign]
    with pytest.raises(InputError, match="not what the sentence encoder 'fake' gives") as refused:
        DemonstrationRetriever(load_pool(directory), other, r.config)
    assert (refused.value.path, refused.value.field) == (str(directory / "demonstrations.npy"), "retrieval.encoder")


def test_pool_vectors_of_another_pool_of_the_same_length_are_refused(tmp_path: Path) -> None:
    directory, r = saved(tmp_path)
    vectors = np.load(directory / "demonstrations.npy")
    (directory / "demonstrations.npy").write_bytes(npy_bytes(vectors[::-1].copy()))  # same encoder, other texts' rows
    with pytest.raises(InputError, match="two files come from different pools"):
        DemonstrationRetriever(load_pool(directory), r.encoder, r.config)


def test_a_pool_of_one_demonstration_loads_and_is_checked(tmp_path: Path) -> None:
    pool = [Dialogue("1", "meld", "train", (Utterance("S0", "great cake", "joy"),))]
    r = retriever(tmp_path, dialogues=pool)
    save_pool(r.index, tmp_path / "model")
    loaded = DemonstrationRetriever(load_pool(tmp_path / "model"), r.encoder, r.config)
    assert {d.text for d in loaded.demonstrations(DEV).values()} == {"great cake"}
