"""Label probabilities as constrained decoding defines them.

Each label's answer (a space, its verbalizer, EOS) is a token path in a trie. Decoding
constrained to the trie branches only where a node has several children; a label's
probability is the product, over the branch points on its path, of the model's next-token
distribution renormalized over that point's children. The probabilities sum to 1 by
construction and every outcome is a valid label. When the labels' first tokens differ (the
usual case: " neutral", " joyful", ...), the root is the only branch point and one forward
pass per prompt is enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instructerc.errors import InputError
from instructerc.labels.label_set import LabelSet
from instructerc.prompts.encoding import SegmentTokenizer


@dataclass(frozen=True)
class BranchPoint:
    """A trie node with several children: the answer tokens leading to it, and its children."""

    path: tuple[int, ...]
    children: tuple[int, ...]


class LabelScorer:
    """Turns next-token logits at branch points into a distribution over a label set."""

    def __init__(self, label_set: LabelSet, tokenizer: SegmentTokenizer) -> None:
        self.label_set = label_set
        eos = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
        self.answers = [tokenizer.answer_ids(v) + eos for v in label_set.verbalizers]
        first: dict[tuple[int, ...], str] = {}
        for verbalizer, answer in zip(label_set.verbalizers, self.answers):
            other = first.setdefault(answer, verbalizer)
            if other != verbalizer:
                # A tokenizer that normalizes (lower-cases, NFKC) or maps unknown characters to one
                # token: the model could not say which of the two it means, so neither is scored.
                raise InputError(
                    f"the labels '{other}' and '{verbalizer}' of {label_set.name} are the same tokens for this model's "
                    "tokenizer, so it cannot tell them apart: rename one",
                    field="label_set",
                )
        _check_no_answer_ends_inside_another(label_set, self.answers)
        children: dict[tuple[int, ...], list[int]] = {}
        for answer in self.answers:
            for depth in range(len(answer)):
                options = children.setdefault(answer[:depth], [])
                if answer[depth] not in options:
                    options.append(answer[depth])
        self.branch_points = [BranchPoint(path, tuple(kids)) for path, kids in children.items() if len(kids) > 1]
        self._point_index = {bp.path: i for i, bp in enumerate(self.branch_points)}
        # For every label, the (branch point, child position) pairs on its path.
        self._label_steps: list[list[tuple[int, int]]] = []
        for answer in self.answers:
            steps = []
            for depth in range(len(answer)):
                point = self._point_index.get(answer[:depth])
                if point is not None:
                    steps.append((point, self.branch_points[point].children.index(answer[depth])))
            self._label_steps.append(steps)
        self.max_answer_tokens = max(len(a) for a in self.answers)

    @property
    def single_pass(self) -> bool:
        return [bp.path for bp in self.branch_points] == [()]

    def sequences(self, prompt_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The sequences whose last-token logits the scorer needs, one per branch point."""
        return [prompt_ids + bp.path for bp in self.branch_points]

    def batch_probabilities(self, logits: Any) -> Any:
        """Single-pass label sets: probabilities for many prompts at once from ``[n, vocab]`` logits."""
        import torch

        if not self.single_pass:
            raise ValueError("labels share answer prefixes: score prompt by prompt")
        root = self.branch_points[0]
        order = [steps[0][1] for steps in self._label_steps]  # each label's child position at the root
        return torch.softmax(logits[:, list(root.children)].float(), dim=-1)[:, order]

    def probabilities(self, logits: Any) -> Any:
        """``logits[i]`` are the next-token logits after ``sequences(...)[i]``; returns label probabilities."""
        import torch

        log_probs = []
        for point, row in zip(self.branch_points, logits):
            log_probs.append(torch.log_softmax(row[list(point.children)].float(), dim=-1))
        scores = torch.stack([sum((log_probs[p][c] for p, c in steps), torch.tensor(0.0)) for steps in self._label_steps])
        return torch.softmax(scores, dim=-1)  # already normalized; softmax removes rounding drift


def _check_no_answer_ends_inside_another(label_set: LabelSet, answers: list[tuple[int, ...]]) -> None:
    """Refuse a label whose answer is the start of another's: the trie has no branch where the
    shorter one ends, so both would get the same probability whatever the model says. Answers
    end with EOS, so this only happens with a tokenizer that has none (``calm`` inside ``calmish``)."""
    for short, verbalizer in zip(answers, label_set.verbalizers):
        for long, other in zip(answers, label_set.verbalizers):
            if len(short) < len(long) and long[: len(short)] == short:
                raise InputError(
                    f"the label '{verbalizer}' of {label_set.name} is the start of the label '{other}' for this model's tokenizer, "
                    "which has no end-of-text token to tell where an answer stops: rename one, or use a tokenizer with an EOS token",
                    field="label_set",
                )
