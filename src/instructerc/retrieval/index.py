"""The demonstration index: training utterances, their embeddings, and a leak-free search.

Policies (:class:`RetrievalConfig.policy`):

``nearest`` (default)
    The most similar training utterance by cosine similarity, never one from the query's own
    dialogue. Identical at training and test time, so what the model learns to use at training
    is what it gets at test.
``same-label`` (the paper's rule; leaks)
    At training time, the most similar training utterance *with the gold label*: the
    demonstration's label is then always the answer, and the model learns to copy it. At test
    time the gold is unknown, so it falls back to ``nearest`` and the copied label is usually
    wrong (users of the paper's code saw MELD fall from ~69 to ~25 weighted F1). Offered only
    to reproduce that finding.

The search is a chunked exact top-k over unit vectors with a mask, so it can exclude a
query's own dialogue and filter by label; a generic nearest-neighbour call cannot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Collection, Sequence

from instructerc.data.dialogue import Dialogue
from instructerc.data.text import CUT_MARK
from instructerc.errors import InputError
from instructerc.files import default_cache_dir
from instructerc.retrieval.cache import cached_array, content_key
from instructerc.retrieval.encoder import EMBEDDED_ENCODER, SentenceEncoder

POLICIES = ("nearest", "same-label")
# (dataset, split, dialogue id): ids are only unique within a split (MELD dev and train both
# number their dialogues from 0), so the split is part of a dialogue's identity.
DialogueKey = tuple[str, str, str]


@dataclass(frozen=True)
class RetrievalConfig:
    """Demonstration retrieval settings.

    Attributes:
        encoder: ``all-MiniLM-L6-v2`` (embedded, offline) or a sentence-transformers model path/id.
        policy: ``nearest`` (leak-free, default) or ``same-label`` (the paper's; leaks the gold).
        batch_size: encoding batch size.
        cache_dir: where embeddings are cached; default ``~/.cache/instructerc``.
    """

    encoder: str = EMBEDDED_ENCODER
    policy: str = "nearest"
    batch_size: int = 128
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        # Typed when read from a recipe, but not when built in Python: a batch size of 2.5 or an
        # encoder of None would otherwise fail deep in sentence-transformers, on uncached runs only.
        for name in ("encoder", "policy"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"must be a string, got {getattr(self, name)!r}", field=f"retrieval.{name}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, PurePath)):
            raise InputError(f"must be a folder path or None, got {self.cache_dir!r}", field="retrieval.cache_dir")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise InputError(f"must be a whole number, got {self.batch_size!r}", field="retrieval.batch_size")
        if self.policy not in POLICIES:
            raise InputError(f"unknown retrieval policy '{self.policy}' (known: {', '.join(POLICIES)})", field="retrieval.policy")
        # An empty name is the path "." (the current folder would be loaded as the encoder).
        if not self.encoder.strip():
            raise InputError(f"must name a sentence encoder (default {EMBEDDED_ENCODER}), got {self.encoder!r}", field="retrieval.encoder")
        # Checked here: the encoder is only called when embeddings are not cached, so a bad size
        # would otherwise fail on some runs and not others, deep in sentence-transformers.
        if self.batch_size < 1:
            raise InputError(f"must be at least 1, got {self.batch_size}", field="retrieval.batch_size")

    def cache_path(self) -> Path:
        # A recipe's "~/cache" is not expanded by any shell: taken as given, it made a folder
        # named "~" in the working directory (one that "rm -rf ~" would then be typed to remove).
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


@dataclass
class Entry:
    dataset: str
    dialogue_id: str
    index: int
    text: str
    label: str
    split: str = "train"


@dataclass
class DemonstrationIndex:
    """Training utterances with unit-length embeddings (row i embeds ``entries[i].text``)."""

    entries: list[Entry]
    embeddings: Any
    encoder_identity: str
    was_cached: bool = False
    source: str | None = None  # the pool file it was loaded from, named by errors
    _groups: Any = field(default=None, repr=False)
    _labels: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import numpy as np

        group_ids: dict[DialogueKey, int] = {}
        self._groups = np.array(
            [group_ids.setdefault((e.dataset, e.split, e.dialogue_id), len(group_ids)) for e in self.entries], dtype=np.int64
        )
        self._group_ids = group_ids
        label_ids: dict[str, int] = {}
        self._labels = np.array([label_ids.setdefault(e.label, len(label_ids)) for e in self.entries], dtype=np.int64)
        self._label_ids = label_ids
        # Per dialogue id, each pool dialogue of that id and its labelled utterances as (index, text).
        self._by_id: dict[str, dict[DialogueKey, list[tuple[int, str]]]] = {}
        for e in self.entries:
            self._by_id.setdefault(e.dialogue_id, {}).setdefault((e.dataset, e.split, e.dialogue_id), []).append((e.index, e.text))

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def build(
        cls, dialogues: Sequence[Dialogue], encoder: SentenceEncoder, config: RetrievalConfig, progress: bool = False
    ) -> "DemonstrationIndex":
        import numpy as np

        entries = [
            Entry(d.dataset, d.id, i, u.text, u.emotion, d.split)
            for d in dialogues
            for i, u in enumerate(d.utterances)
            if u.emotion is not None
        ]
        if not entries:
            raise InputError("no labelled utterances to retrieve demonstrations from", field="retrieval")
        texts = [e.text for e in entries]
        key = content_key("index-v1", encoder.identity, texts)
        embeddings, cached = cached_array(
            config.cache_path() / "embeddings",
            key,
            lambda: checked_embeddings(encoder.encode(texts, config.batch_size, progress), texts, config),
            rows=len(texts),
            width=getattr(encoder, "dimension", None),
        )
        # The pool is saved beside the model in float16 (save_pool): training searches the same
        # rounded values, so a saved model shows the demonstrations it was trained and selected with.
        rounded = np.asarray(embeddings, dtype=np.float16).astype(np.float32)
        return cls(entries=entries, embeddings=rounded, encoder_identity=encoder.identity, was_cached=cached)

    def own_key(self, dialogue: Dialogue) -> DialogueKey:
        """The key under which ``dialogue``'s own utterances are in the pool, so a search for it
        excludes them. Its (dataset, split, id), unless the pool holds no dialogue of that key
        but holds it under another: a training dialogue predicted (its dataset unnamed, its
        split read as test) or sent to the service would otherwise get its own utterance as
        the demonstration, with its gold label, and the model would copy the answer.

        Another key is the same dialogue when it has the same id (a ``#2`` that told apart two
        dialogues of one id aside) and each of its labelled utterances that the dialogue has
        come to (a live conversation has only its first turns) is there, at the same position,
        with the same text or that text cut to fit a prompt."""
        key = (dialogue.dataset, dialogue.split, dialogue.id)
        if key in self._group_ids:
            return key
        base = re.sub(r"#\d+$", "", dialogue.id)
        for own, utterances in {**self._by_id.get(base, {}), **self._by_id.get(dialogue.id, {})}.items():
            reached = [(i, text) for i, text in utterances if i < len(dialogue)]
            if reached and all(_same_text(text, dialogue.utterances[i].text) for i, text in reached):
                return own
        return key

    def search(
        self,
        queries: Any,
        query_dialogues: Sequence[DialogueKey],
        k: int = 1,
        required_labels: Sequence[str | None] | None = None,
        chunk: int = 1024,
    ) -> list[list[tuple[int, float]]]:
        """Top-``k`` (entry, cosine) per query, excluding the query's own dialogue.

        ``required_labels[q]``, when given and not None, restricts query q to that label.
        """
        import numpy as np

        if k < 1:
            return [[] for _ in range(len(queries))]
        self.check_dimensions(queries.shape[-1])
        results: list[list[tuple[int, float]]] = []
        k = min(k, len(self.entries))
        for start in range(0, len(queries), chunk):
            block = queries[start : start + chunk]
            scores = block @ self.embeddings.T
            own = np.array([self._group_ids.get(key, -1) for key in query_dialogues[start : start + chunk]])
            scores[self._groups[None, :] == own[:, None]] = -np.inf
            if required_labels is not None:
                wanted = np.array(
                    [self._label_ids.get(lbl, -2) if lbl is not None else -1 for lbl in required_labels[start : start + chunk]]
                )
                restrict = wanted[:, None] != -1
                scores[restrict & (self._labels[None, :] != wanted[:, None])] = -np.inf
            for row in range(len(block)):
                ranked = _top(scores[row], k)
                results.append([(int(c), float(scores[row, c])) for c in ranked if np.isfinite(scores[row, c])])
        return results

    def check_dimensions(self, width: int) -> None:
        """Queries (of ``width`` dimensions) and pool must come from the same encoder: a pool saved
        with another one (or an edited ``retrieval.encoder``) would otherwise fail deep in numpy."""
        pool_width = self.embeddings.shape[-1]
        if width != pool_width:
            raise InputError(
                f"the demonstration pool's embeddings have {pool_width} dimensions, the sentence encoder gives {width}: "
                "the pool was embedded by another encoder",
                path=self.source,
                field="retrieval.encoder",
            )


def _same_text(pooled: str, text: str) -> bool:
    """Whether ``text`` is ``pooled``, or ``pooled`` cut to its start and end around :data:`CUT_MARK`
    (a prediction retrieves for an utterance as its prompt shows it)."""
    if text == pooled:
        return True
    at = text.find(CUT_MARK)
    while at >= 0:
        head, tail = text[:at], text[at + len(CUT_MARK) :]
        if len(head) + len(tail) < len(pooled) and pooled.startswith(head) and pooled.endswith(tail):
            return True
        at = text.find(CUT_MARK, at + 1)
    return False


def checked_embeddings(embeddings: Any, texts: Sequence[str], config: RetrievalConfig) -> Any:
    """``embeddings`` of ``texts``, refused when a row is not finite: a NaN row matches nothing,
    so its utterance would silently get no demonstration (or never be shown as one)."""
    import numpy as np

    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        raise InputError(
            f"the sentence encoder '{config.encoder}' gave NaN or infinite embeddings for {len(bad)} of {len(texts)} texts "
            f"(the first: {texts[bad[0]][:60]!r}): its weights are damaged or it overflows in this precision",
            field="retrieval.encoder",
        )
    return embeddings


def _top(scores: Any, k: int) -> list[int]:
    """The ``k`` best entries, best first; among equal scores the earliest entry, so the same
    text under two labels (MELD's many "Hey!") always gives the same demonstration."""
    import numpy as np

    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > kth)
        candidates = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
    else:
        candidates = np.arange(len(scores))
    return sorted((int(c) for c in candidates), key=lambda c: (-scores[c], c))


POOL_TEXTS = "demonstrations.jsonl"
POOL_EMBEDDINGS = "demonstrations.npy"


def save_pool(index: DemonstrationIndex, directory: Path) -> None:
    """Store the demonstration pool beside a model (texts, labels, float16 embeddings)."""
    import io
    import json

    import numpy as np

    from instructerc.files import atomic_write

    with atomic_write(directory / POOL_TEXTS) as handle:
        handle.write(json.dumps({"encoder": index.encoder_identity}) + "\n")
        for e in index.entries:
            handle.write(
                json.dumps(
                    {
                        "dataset": e.dataset,
                        "dialogue_id": e.dialogue_id,
                        "index": e.index,
                        "text": e.text,
                        "label": e.label,
                        "split": e.split,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    buffer = io.BytesIO()
    np.save(buffer, index.embeddings.astype(np.float16), allow_pickle=False)
    with atomic_write(directory / POOL_EMBEDDINGS, "wb") as handle:
        handle.write(buffer.getvalue())


def load_pool(directory: Path, labels: Collection[str] | None = None) -> DemonstrationIndex:
    """The pool :func:`save_pool` stored beside a model; a missing, damaged or mismatched file is
    an InputError naming it (and the line and field where one is wrong).

    ``labels``: the labels of the model beside the pool. A demonstration with another label is
    refused here, naming its line: the prompt shows its label in the model's words, and would
    otherwise fail at the first prediction."""
    texts, vectors = directory / POOL_TEXTS, directory / POOL_EMBEDDINGS
    encoder_identity, entries = _read_pool_texts(texts, labels)
    embeddings = _read_pool_embeddings(vectors)
    if len(embeddings) != len(entries):
        raise InputError(
            f"{len(embeddings)} embeddings for the {len(entries)} demonstrations of {texts}: the two files are not from one pool",
            path=vectors,
        )
    _check_unit_rows(embeddings, vectors, texts)
    return DemonstrationIndex(entries, embeddings, encoder_identity, was_cached=True, source=str(vectors))


def _check_unit_rows(embeddings: Any, vectors: Path, texts: Path) -> None:
    """Refuses NaN, zero or unnormalised rows: save_pool writes unit vectors, and such a row would
    never be shown (NaN) or tie with every query (zero), silently changing the demonstrations."""
    import numpy as np

    norms = np.linalg.norm(embeddings.astype(np.float64), axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-2))
    if len(bad):
        row = int(bad[0])
        raise InputError(
            f"damaged: {len(bad)} embeddings are not unit-length vectors (the first: row {row}, demonstration {row + 1} "
            f"of {texts.name}, of length {norms[row]:.3g}); save_pool writes unit vectors",
            path=vectors,
        )


# Entry fields as saved, and the JSON type each must have.
_ENTRY_FIELDS = {"dataset": str, "dialogue_id": str, "index": int, "text": str, "label": str, "split": str}


def _read_pool_texts(file: Path, labels: Collection[str] | None) -> tuple[str, list[Entry]]:
    import json

    try:
        # Split on newlines only: save_pool writes texts unescaped, and splitlines() would also
        # cut inside a text at U+2028, U+2029 or NEL (U+0085).
        lines = file.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise InputError("missing: the model's template shows demonstrations, retrieved from this pool", path=file) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text: the demonstration pool is damaged", path=file) from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"not JSON ({error.msg}): the demonstration pool is damaged", path=file, line=number) from None
        if not isinstance(record, dict):
            raise InputError("not a JSON object: the demonstration pool is damaged", path=file, line=number)
        records.append((number, record))
    if not records or not isinstance(records[0][1].get("encoder"), str):
        raise InputError("no header naming the sentence encoder: the demonstration pool is damaged", path=file, line=1, field="encoder")
    entries = [_entry(record, file, number) for number, record in records[1:]]
    if not entries:
        raise InputError("no demonstrations: the pool is empty", path=file)
    if labels is not None:
        known = set(labels)
        for (number, _), entry in zip(records[1:], entries):
            if entry.label not in known:
                raise InputError(
                    f"'{entry.label}' is not a label of the model beside this pool ({', '.join(labels)}): the pool is from another model",
                    path=file,
                    line=number,
                    field="label",
                )
    return records[0][1]["encoder"], entries


def _entry(record: dict[str, Any], file: Path, number: int) -> Entry:
    values = {"split": "train"}  # pools saved before splits were recorded hold train utterances
    for name, kind in _ENTRY_FIELDS.items():
        if name not in record:
            if name in values:
                continue
            raise InputError("missing", path=file, line=number, field=name)
        value = record[name]
        # An empty label would be shown as the demonstration's emotion.
        if not isinstance(value, kind) or isinstance(value, bool) or (name == "label" and not value.strip()):
            expected = "an integer" if kind is int else "a non-empty string" if name == "label" else "a string"
            raise InputError(f"must be {expected}, got {_json_repr(value)}", path=file, line=number, field=name)
        values[name] = value
    return Entry(**values)


def _json_repr(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_pool_embeddings(file: Path) -> Any:
    import numpy as np

    try:
        embeddings = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("missing: the model's template shows demonstrations, retrieved from this pool", path=file) from None
    except (OSError, ValueError, EOFError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"damaged ({reason[:200]})", path=file) from None
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise InputError(f"damaged: expected a 2-D float array of embeddings, got {embeddings.ndim}-D {embeddings.dtype}", path=file)
    return embeddings.astype(np.float32)
