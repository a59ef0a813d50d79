"""Choosing each utterance's demonstration from the index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.errors import InputError
from instructerc.retrieval.cache import cached_array, content_key
from instructerc.retrieval.demonstration import Demonstration
from instructerc.retrieval.encoder import SentenceEncoder
from instructerc.retrieval.index import DemonstrationIndex, RetrievalConfig, checked_embeddings

# The least cosine between a pool's stored vector and the same text embedded again by the same
# encoder: float16 storage and another device or batch move it by about 1e-3, while another
# encoder's or another text's vector is far off.
_SAME_ENCODER = 0.9

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
        if self.index.source is not None:
            self._check_pool_encoder()

    def _check_pool_encoder(self, samples: int = 8) -> None:
        """Refuses a saved pool whose vectors are not what this encoder gives for its texts.

        Widths only tell encoders of different sizes apart; a pool embedded by another encoder
        of the same width (MiniLM-L6 and -L12 both give 384), or its .npy from another pool of
        the same length, would retrieve silently wrong demonstrations. A few texts, spread over
        the pool, are embedded again: the same encoder gives them back up to float16 rounding."""
        import numpy as np

        rows = sorted({int(r) for r in np.linspace(0, len(self.index) - 1, min(samples, len(self.index)))})
        texts = [self.index.entries[r].text for r in rows]
        fresh = checked_embeddings(self.encoder.encode(texts, self.config.batch_size), texts, self.config)
        self.index.check_dimensions(fresh.shape[-1])
        agreement = np.sum(fresh * self.index.embeddings[rows], axis=1)
        worst = int(np.argmin(agreement))
        if agreement[worst] < _SAME_ENCODER:
            raise InputError(
                f"the demonstration pool's embeddings are not what the sentence encoder '{self.config.encoder}' gives for its "
                f"texts (demonstration {rows[worst] + 1}: cosine {agreement[worst]:.2f}): the pool was embedded by another "
                "encoder, or its two files come from different pools",
                path=self.index.source,
                field="retrieval.encoder",
            )

    @classmethod
    def build(cls, train_dialogues: Sequence[Dialogue], config: RetrievalConfig, progress: bool = False) -> "DemonstrationRetriever":
        encoder = SentenceEncoder.load(config.encoder)
        return cls(DemonstrationIndex.build(train_dialogues, encoder, config, progress), encoder, config)

    def embed(self, texts: list[str]):
        def compute() -> Any:
            return checked_embeddings(self.encoder.encode(texts, self.config.batch_size), texts, self.config)

        if not self.cache_queries:
            return compute()
        key = content_key("queries-v1", self.encoder.identity, texts)
        width = getattr(self.encoder, "dimension", None)
        embeddings, _ = cached_array(self.config.cache_path() / "embeddings", key, compute, rows=len(texts), width=width)
        return embeddings

    def neighbours(self, dialogues: Sequence[Dialogue], k: int = 1, training: bool = False) -> dict[UtteranceKey, list[tuple[int, float]]]:
        """Top-k index entries per utterance. Under ``same-label`` at training time, restricted to the gold label."""
        keys = [(d.dataset, d.id, i) for d in dialogues for i in range(len(d))]
        texts = [u.text for d in dialogues for u in d.utterances]
        if not keys:
            return {}
        same_label = training and self.config.policy == "same-label"
        labels = [u.emotion for d in dialogues for u in d.utterances] if same_label else None
        # Each utterance is kept from its own dialogue's, also where the pool holds it under another key.
        owners = [own for d in dialogues for own in [self.index.own_key(d)] * len(d)]
        found = self.index.search(self.embed(texts), owners, k=k, required_labels=labels)
        return dict(zip(keys, found))

    def demonstrations(self, dialogues: Sequence[Dialogue], training: bool = False) -> dict[UtteranceKey, Demonstration]:
        """The top-1 demonstration per utterance (utterances with no candidate get none)."""
        shown = {}
        for key, hits in self.neighbours(dialogues, 1, training).items():
            if hits:
                entry = self.index.entries[hits[0][0]]
                shown[key] = Demonstration(text=entry.text, label=entry.label)
        return shown
