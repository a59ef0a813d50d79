"""A label set: the allowed emotions of a dataset, as strings end to end."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# What the scorer writes in place of a label (instructerc.evaluation.metrics): an answer that is
# no label, and a label the scored dataset lacks. A label so named would be scored right for them.
INVALID_MARK = "<invalid>"
OUTSIDE_MARK = "<outside>"


@dataclass(frozen=True)
class LabelSet:
    """The emotions a model may answer, in the fixed order of the label statement.

    Attributes:
        name: e.g. ``meld`` or ``uime``; recorded in a model directory.
        labels: canonical names, as the dataset spells them (``sadness``, ``Joyful``).
        verbalizers: the word shown to and produced by the model for each label, same order
            (MELD's ``sadness`` is verbalized ``sad``, as in InstructERC).
    """

    name: str
    labels: tuple[str, ...]
    verbalizers: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"a label set's name must be a string, not {type(self.name).__name__}")
        # Stored as tuples of plain strings whatever sequence was given: a list would make the
        # set unhashable and unequal to the same labels as a tuple (a unified label set given
        # as lists would then not be recognised as unified, and scored on the wrong classes).
        object.__setattr__(self, "labels", _words(self.labels, self.name, "labels"))
        object.__setattr__(self, "verbalizers", _words(self.verbalizers, self.name, "verbalizers"))
        if len(self.labels) != len(self.verbalizers):
            raise ValueError(f"label set {self.name}: {len(self.labels)} labels but {len(self.verbalizers)} verbalizers")
        if not self.labels:
            raise ValueError(f"label set {self.name} is empty")
        for kind, words in (("label", self.labels), ("verbalizer", self.verbalizers)):
            folded = [_key(w) for w in words]
            if len(set(folded)) != len(folded):
                raise ValueError(f"label set {self.name}: duplicate {kind}s in {list(words)}")
            if any(not w.strip() or w != w.strip() for w in words):
                raise ValueError(f"label set {self.name}: {kind}s must be non-empty and unpadded: {list(words)}")
            broken = [w for w in words if any(unicodedata.category(c) == "Cc" for c in w)]
            if broken:
                # A line feed or tab would split the one-line label statement, and no file reader
                # can give such a label (they refuse it), so gold could never match it.
                raise ValueError(f"label set {self.name}: the {kind} {broken[0]!r} holds a control character (a line break or tab)")
            reserved = [w for w in words if w.casefold() in (INVALID_MARK, OUTSIDE_MARK)]
            if reserved:
                raise ValueError(
                    f"label set {self.name}: '{reserved[0]}' is the scorer's mark for an answer that is no label, not a {kind}"
                )
        # Any spelling a user may give (canonical or verbalizer, any case) resolves to one label.
        lookup: dict[str, str] = {}
        for label, word in zip(self.labels, self.verbalizers):
            for key in (_key(label), _key(word)):
                if lookup.setdefault(key, label) != label:
                    raise ValueError(f"label set {self.name}: '{key}' names two labels")
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_by_verbalizer", dict(zip(self.verbalizers, self.labels)))
        object.__setattr__(self, "_verbalizer_of", dict(zip(self.labels, self.verbalizers)))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and label in self._verbalizer_of

    def canonical(self, value: str) -> str | None:
        """The canonical label a user's spelling names (case-insensitive, in any Unicode form,
        canonical or verbalizer), else None."""
        if not isinstance(value, str):
            raise TypeError(f"a label is a string, not {type(value).__name__}")
        return self._lookup.get(_key(value.strip()))

    def verbalize(self, label: str) -> str:
        """The word the model sees and says for a canonical label."""
        try:
            return self._verbalizer_of[label]
        except (KeyError, TypeError):
            # KeyError's message would be the bare label; say which set and what it holds.
            raise KeyError(f"{label!r} is not a label of {self.name} ({', '.join(self.labels)})") from None

    def parse_exact(self, text: str) -> str | None:
        """The label whose verbalizer is exactly ``text`` (surrounding white space aside), else None.

        Strict on purpose: generated text that is not exactly a label is invalid, never snapped.
        """
        if not isinstance(text, str):
            raise TypeError(f"generated text is a string, not {type(text).__name__}")
        return self._by_verbalizer.get(text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "verbalizers": list(self.verbalizers)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LabelSet":
        if not isinstance(data, Mapping):
            raise TypeError(f"a label set is a mapping with name, labels and verbalizers, not {type(data).__name__}")
        missing = [key for key in ("name", "labels", "verbalizers") if key not in data]
        if missing:
            raise ValueError(f"a label set needs {', '.join(missing)} (it has {', '.join(map(str, data)) or 'nothing'})")
        return cls(name=str(data["name"]), labels=data["labels"], verbalizers=data["verbalizers"])

    @classmethod
    def from_names(cls, name: str, labels: Iterable[str]) -> "LabelSet":
        """A label set whose verbalizers are the labels themselves (user data)."""
        labels = _words(labels, name, "labels")  # once: a generator could not be read twice
        return cls(name=name, labels=labels, verbalizers=labels)


# Unicode's space separators (Zs). A run of them inside a name or a label shows as one space:
# ``very\u00a0happy`` pasted from a web page or a word processor beside a typed ``very happy``
# made two classes (or two speakers) that no report or prompt could tell apart. Tabs and line
# breaks are not among them: they are refused where a name or label is read.
SPACE_RUN = re.compile("[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")


def _key(word: str) -> str:
    """The form two spellings of one label share: case-folded, in one Unicode form (NFC) and with
    one plain space between words, so ``café`` typed with a combining accent is the label ``café``
    and ``very\u00a0happy`` the label ``very happy``, never a second class that looks the same
    (the file readers read every emotion so)."""
    return SPACE_RUN.sub(" ", unicodedata.normalize("NFC", unicodedata.normalize("NFC", word).casefold()))


def _words(words: Any, name: Any, kind: str) -> tuple[str, ...]:
    """``words`` as a tuple of plain strings; a string itself is refused, since read as a
    sequence it would make a label of every character."""
    if isinstance(words, (str, bytes)) or not isinstance(words, Iterable):
        raise TypeError(f"label set {name}: {kind} must be a list or tuple of strings, not {type(words).__name__}")
    words = tuple(words)
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"label set {name}: {kind} must be strings, got {word!r}")
    return tuple(str(word) for word in words)
