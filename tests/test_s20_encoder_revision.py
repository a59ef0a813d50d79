"""Embeddings cached for a hub-id encoder are keyed by the commit of its local copy, not the id
alone: a model its owner updated is not read back from the old model's vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from instructerc.retrieval.encoder import cached_revision, fingerprint


def _hub_copy(cache: Path, hub_id: str, commit: str) -> None:
    """A local copy of ``hub_id`` at ``commit`` laid out as huggingface_hub's cache lays it out."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_an_updated_local_copy_of_a_hub_encoder_gets_another_identity(hub_cache: Path) -> None:
    _hub_copy(hub_cache, "org/encoder", "a" * 40)
    first = fingerprint("org/encoder")
    assert cached_revision("org/encoder") == "a" * 40
    _hub_copy(hub_cache, "org/encoder", "b" * 40)
    assert cached_revision("org/encoder") == "b" * 40
    assert fingerprint("org/encoder") != first
    assert fingerprint("org/encoder") == fingerprint("org/encoder")


def test_an_id_without_a_local_copy_or_not_an_id_at_all_has_no_revision(hub_cache: Path) -> None:
    assert cached_revision("org/absent") == ""
    assert cached_revision("not a valid id") == ""
    assert fingerprint("org/absent") != fingerprint("org/other")
