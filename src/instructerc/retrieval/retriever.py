"""Choosing each utterance's demonstration from the index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.retrieval.cache import cached_array, content_key
from instructerc.retrieval.demonstration import Demonstration
from instructerc.retrieval.encoder import SentenceEncoder
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig

UtteranceKey = tuple[str, str, int]


@dataclass
class DemonstrationRetriever:
    """Finds, for every utterance of some dialogues, the training utterance to show with it.

    ``cache_queries``: keep the embeddings of the texts searched for in the on-disk cache, which
    pays when the same dialogues come again (a split embedded at every dev evaluation, a file
    predicted twice). A service turns it off: every request's texts differ, and the cache would
    grow by a file per request, holding what its users said.
    """

    index: DemonstrationIndex
    encoder: SentenceEncoder
    config: RetrievalConfig
    cache_queries: bool = True

    def __post_init__(self) -> None:
        # A pool from another encoder is refused as the model loads, not at its first prediction.
        width = getattr(self.encoder, "dimension", None)
        if width is not None:
            self.index.check_dimensions(width)

    @classmethod
    def build(cls, train_dialogues: Sequence[Dialogue], config: RetrievalConfig, progress: bool = False) -> "DemonstrationRetriever":
        encoder = SentenceEncoder.load(config.encoder)
        return cls(DemonstrationIndex.build(train_dialogues, encoder, config, progress), encoder, config)

    def embed(self, texts: list[str]):
        if not self.cache_queries:
            return self.encoder.encode(texts, self.config.batch_size)
        key = content_key("queries-v1", self.encoder.identity, texts)
        embeddings, _ = cached_array(
            self.config.cache_path() / "embeddings", key, lambda: self.encoder.encode(texts, self.config.batch_size), rows=len(texts)
        )
        return embeddings

    def neighbours(self, dialogues: Sequence[Dialogue], k: int = 1, training: bool = False) -> dict[UtteranceKey, list[tuple[int, float]]]:
        """Top-k index entries per utterance. Under ``same-label`` at training time, restricted to the gold label."""
        keys = [(d.dataset, d.id, i) for d in dialogues for i in range(len(d))]
        texts = [u.text for d in dialogues for u in d.utterances]
        if not keys:
            return {}
        same_label = training and self.config.policy == "same-label"
        labels = [u.emotion for d in dialogues for u in d.utterances] if same_label else None
        found = self.index.search(
            self.embed(texts), [(d.dataset, d.split, d.id) for d in dialogues for _ in d.utterances], k=k, required_labels=labels
        )
        return dict(zip(keys, found))

    def demonstrations(self, dialogues: Sequence[Dialogue], training: bool = False) -> dict[UtteranceKey, Demonstration]:
        """The top-1 demonstration per utterance (utterances with no candidate get none)."""
        shown = {}
        for key, hits in self.neighbours(dialogues, 1, training).items():
            if hits:
                entry = self.index.entries[hits[0][0]]
                shown[key] = Demonstration(text=entry.text, label=entry.label)
        return shown
