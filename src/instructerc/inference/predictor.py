"""The Predictor: emotions and label probabilities for every utterance of some dialogues.

Both the CLI and the service use it. Two modes:

``score`` (default)
    Every label is scored as a continuation of the prompt (:mod:`label_scoring`): each output is
    a valid label and the probabilities sum to 1. Prompts are packed by dialogue, so a prefix
    shared by a dialogue's prompts is computed once.
``generate``
    Free greedy generation, as the paper did, parsed strictly: text that is not exactly a label's
    verbalizer is *invalid* (``label=None``) and reported as such. ``paper_parsing=True``
    reproduces the paper's repair (snapping any text to the closest label) for comparison only.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

from instructerc.data.dialogue import Dialogue, Utterance
from instructerc.data.jsonl import benchmark_spelling
from instructerc.data.loader import SPEAKER_BREAKS_LINE
from instructerc.data.text import breaks_line, canonical_speaker, shows_nothing
from instructerc.data.validation import TextProblem, check_string
from instructerc.errors import InputError
from instructerc.inference.batched import last_token_logits
from instructerc.inference.incremental import TURN_BATCH_TOKENS, ConversationCache, common_prefix
from instructerc.inference.label_scoring import LabelScorer
from instructerc.inference.parallel import default_workers
from instructerc.labels.prediction import Prediction, per_dialogue  # Prediction re-exported: callers long imported it from here
from instructerc.modeling.forward import head_is_plain
from instructerc.modeling.sparse_attention import use_block_sparse_attention
from instructerc.prompts.encoding import SegmentTokenizer
from instructerc.prompts.fitting import encode_fitting, unlabelled, with_distinct_keys
from instructerc.prompts.setup import PromptSetup
from instructerc.prompts.templates import shares_dialogue_prefix

MODES = ("score", "generate")

# Deprecation notices raised inside the libraries (peft asking transformers 5 for
# ``is_gradient_checkpointing`` on every load): nothing a caller of ours can act on.
_LIBRARY_NOTICES = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


@contextlib.contextmanager
def quiet_library_warnings() -> Any:
    """Hides the libraries' deprecation notices for the duration of one of our calls only: a
    caller's own code, before and after, keeps Python's warning filters as they set them."""
    with warnings.catch_warnings():
        for category in _LIBRARY_NOTICES:
            # ``module`` is matched at the warning's origin: any module but ours.
            warnings.filterwarnings("ignore", category=category, module=r"(?!instructerc\b)")
        yield


def check_mode(mode: str, paper_parsing: bool = False) -> None:
    """Refuse an unknown mode, and the paper's parsing outside ``generate`` mode, where it would
    silently do nothing (score mode never produces an invalid output to repair)."""
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}' (known: {', '.join(MODES)})", field="mode")
    # Only a bool: a string such as "no" or "false" is truthy, and would switch the repair on.
    if not isinstance(paper_parsing, bool):
        raise InputError(f"paper_parsing must be True or False, got {paper_parsing!r}", field="paper_parsing")
    if paper_parsing and mode != "generate":
        raise InputError(
            "--paper-parsing only applies to --mode generate (score mode never produces invalid outputs)", field="paper-parsing"
        )


@dataclass(frozen=True)
class InferenceConfig:
    """Throughput knobs that do not change results.

    Attributes:
        max_tokens: the most tokens in one packed row (``None``: 1,024 on a CPU, 2,048 on a GPU).
        batch_tokens: the most padded tokens in one forward pass (``None``: 1,024 on a CPU,
            16,384 on a GPU). On a CPU, small batches keep activations in cache: with the
            ``dialogue-stream`` model, 40 MELD test dialogues took 31.8 s at 1,024 tokens and
            45.4 s at 4,096 (one thread).
        generate_batch_size: prompts generated together in ``generate`` mode.
        block_sparse_attention: compute attention only over the keys each block of queries may
            see (:mod:`instructerc.modeling.sparse_attention`), for models loaded by
            :meth:`Predictor.from_directory`. ``None``: on a CPU, off on a GPU (where SDPA's
            fused kernels are the better tool).
        workers: CPU threads that run forward passes side by side, each with its share of
            PyTorch's intra-op threads (:mod:`instructerc.inference.parallel`): a dialogue's
            packed rows, and live turns of several conversations (:meth:`predict_turns`, split
            into that many passes). ``None``: 2 on a CPU where PyTorch has 2 or more threads,
            else 1; always 1 on other devices.
        packed_weights: lay bf16 linear weights out once for oneDNN, for models loaded by
            :meth:`Predictor.from_directory` (:mod:`instructerc.modeling.packed_linear`; same
            outputs). ``None``: on a CPU.
    """

    max_tokens: int | None = None
    batch_tokens: int | None = None
    generate_batch_size: int = 8
    block_sparse_attention: bool | None = None
    workers: int | None = None
    packed_weights: bool | None = None

    def __post_init__(self) -> None:
        # Checked here, not where used: a 0 would read as "the default" (``or``), a string
        # ``"no"`` as switched on, and a batch size of 0 or less would lose every prompt.
        for name in ("max_tokens", "batch_tokens", "workers"):
            _check_count(getattr(self, name), name, optional=True)
        _check_count(self.generate_batch_size, "generate_batch_size", optional=False)
        for name in ("block_sparse_attention", "packed_weights"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise InputError(f"{name} must be True, False or None (automatic), got {value!r}", field=name)

    def sizes(self, device: Any) -> tuple[int, int]:
        """(max_tokens, batch_tokens) for a device."""
        gpu = str(device).startswith("cuda")
        return self.max_tokens or (2048 if gpu else 1024), self.batch_tokens or (16384 if gpu else 1024)

    def worker_count(self, device: Any) -> int:
        """Forward passes run side by side on ``device``."""
        if not is_cpu(device):
            return 1
        return self.workers if self.workers is not None else default_workers()

    def packs_weights(self, device: Any) -> bool:
        """Whether to pack bf16 linear weights on ``device``."""
        return self.packed_weights if self.packed_weights is not None else is_cpu(device)

    def sparse_attention(self, device: Any) -> bool:
        """Whether to use block-sparse attention on ``device``."""
        return self.block_sparse_attention if self.block_sparse_attention is not None else is_cpu(device)


class Predictor:
    """Labels dialogues with a model; see the module docstring for the two modes.

    Its methods raise ``TypeError`` for an argument of the wrong kind (not a list of dialogues,
    not a :class:`ConversationCache`, a speaker that is no string) and :class:`InputError`, a
    ``ValueError``, for a value they refuse (an empty text, an unknown mode), naming the field
    (``dialogues[0].utterances[1].text``)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        setup: PromptSetup,
        retriever: Any = None,
        device: Any = "cpu",
        config: InferenceConfig | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.segments = SegmentTokenizer(tokenizer)
        self.setup = setup
        self.retriever = retriever
        self.device = device
        self.config = checked_config(config)
        self.scorer = LabelScorer(setup.label_set, self.segments)
        self._direct_head: bool | None = None  # decided on first use, see head_is_plain
        # The cache of the first conversation scored from scratch: every prompt starts with the
        # same instruction, so a new conversation starts from it (see predict_turns).
        self._first_cache: Any = None
        if setup.uses_demonstrations and retriever is None:
            raise InputError("this template shows demonstrations but no demonstration pool was given", field="retrieval")

    def __getstate__(self) -> dict[str, Any]:
        # The shared first prefix is only a saving, and a ConversationCache cannot be pickled
        # (see ConversationCache.__reduce_ex__): a pickled predictor recomputes it on first use.
        return {**self.__dict__, "_first_cache": None}

    @property
    def label_set(self):
        return self.setup.label_set

    @property
    def precision(self) -> str:
        """The type the model computes in (``float32``, ``bfloat16``...); probabilities are always float32."""
        from instructerc.modeling.precision import dtype_name

        return dtype_name(next(self.model.parameters()).dtype)

    @classmethod
    def from_directory(
        cls,
        directory: str | Path,
        device: Any = None,
        config: InferenceConfig | None = None,
        dtype: Any = "auto",
        trust_remote_code: bool = False,
    ) -> "Predictor":
        """A predictor for a model directory, its weights in ``dtype`` (``auto``: bf16 where the
        device computes it natively, see :mod:`instructerc.modeling.precision`; ``float32``,
        ``bfloat16``, ``float16``, or the torch dtype of one). ``device``: ``None`` for a GPU
        where there is one, else the CPU; a device PyTorch cannot use here is refused."""
        from instructerc.modeling.model_dir import load_model
        from instructerc.modeling.precision import dtype_choice
        from instructerc.retrieval.encoder import SentenceEncoder
        from instructerc.retrieval.index import load_pool
        from instructerc.retrieval.retriever import DemonstrationRetriever

        if not isinstance(directory, (str, os.PathLike)):
            hint = " (the shipped model: instructerc.modeling.default_model.default_model_dir())" if directory is None else ""
            raise TypeError(f"directory must be a path to a model directory, not {_kind(directory)}{hint}")
        if not str(directory).strip():
            # Path("") is ".": an unset variable (os.environ.get("MODEL", "")) loaded the working directory.
            raise InputError("an empty path (an unset variable?): name a model directory", field="directory")
        directory = Path(directory)
        device = checked_device(default_device() if device is None else device)
        config = checked_config(config)
        # Checked before anything loads (a LoRA directory may first convert its base model);
        # None is the default, as for the other arguments.
        dtype = dtype_choice("auto" if dtype is None else dtype)
        with quiet_library_warnings():
            model, tokenizer, _ = load_model(directory, device, dtype=dtype, trust_remote_code=trust_remote_code)
        if config.sparse_attention(device):
            use_block_sparse_attention(model)
        if config.packs_weights(device):
            from instructerc.modeling.packed_linear import pack_linear_layers

            pack_linear_layers(model)
        setup = PromptSetup.load(directory)
        retriever = None
        if setup.uses_demonstrations:
            pool = load_pool(directory, setup.label_set.labels)
            retriever = DemonstrationRetriever(pool, SentenceEncoder.load(setup.retrieval.encoder), setup.retrieval)
        return cls(model, tokenizer, setup, retriever, device, config)

    # -- prompts ----------------------------------------------------------------------------------
    def encoded_prompts(self, items: Sequence[tuple[Dialogue, int]]) -> list[Any]:
        """Prompts for utterance ``index`` of ``dialogue``, for each (dialogue, index), budgeted."""
        return self.fitted_prompts(items)[0]

    def fitted_prompts(self, items: Sequence[tuple[Dialogue, int]]) -> tuple[list[Any], list[str | None]]:
        """The prompts, and per item the text its utterance was cut to (``None``: it fitted).
        Gold emotions are removed first: predicting never needs them, whatever label set they are in.
        Different dialogues under one id are told apart (:func:`with_distinct_keys`; a no-op where
        the caller already did), as prompts are built per (dataset, id)."""
        return encode_fitting(unlabelled(with_distinct_keys(items)), self._encode, self.segments)

    def _fitted_with_history(
        self, items: Sequence[tuple[Dialogue, int]], cut_before: Sequence[Collection[int]] | None
    ) -> tuple[list[Any], list[str | None], list[set[int]]]:
        """:meth:`fitted_prompts` of ``items``, each fitted together with the earlier utterances
        ``cut_before`` names, and per item those of them their own prompts cut. A turn cut when it
        was the newest is cut by its own prompt, and a speaker's name cut there is cut in all
        their lines: given only the newest item, the history would keep the whole text and name,
        and the budget would drop those lines instead."""
        pairs = enumerate(zip(items, cut_before or ()))
        extra = [(k, (d, i)) for k, ((d, t), earlier) in pairs for i in sorted(set(earlier)) if 0 <= i < t]
        # Earlier turns first, as in a whole dialogue: cuts are made in the order prompts come,
        # and a name over the budget is cut by the first of its speaker's prompts.
        encoded, cuts = self.fitted_prompts([*(item for _, item in extra), *items])
        earlier_cut: list[set[int]] = [set() for _ in items]
        for (k, (_, i)), cut in zip(extra, cuts):
            if cut is not None:
                earlier_cut[k].add(i)
        return encoded[len(extra) :], cuts[len(extra) :], earlier_cut

    def _encode(self, items: Sequence[tuple[Dialogue, int]]) -> list[Any]:
        """Each item's prompt, or the error of one that cannot fit (see :func:`encode_fitting`)."""
        dialogues = list({(d.dataset, d.id): d for d, _ in items}.values())
        demonstrations = self.retriever.demonstrations(dialogues, training=False) if self.retriever is not None else {}
        builder = self.setup.builder(demonstrations)
        examples = [builder.erc(d, i) for d, i in items]
        return self.setup.encode_each(examples, self.segments, with_target=False, reserve=self.scorer.max_answer_tokens)

    # -- prediction -------------------------------------------------------------------------------
    def predict(
        self, dialogues: Iterable[Dialogue], mode: str = "score", paper_parsing: bool = False, progress: Any = None
    ) -> list[list[Prediction]]:
        """One list of predictions per dialogue, one prediction per utterance (a dialogue with no
        utterances gets an empty list). ``dialogues``: a list, tuple or other iterable of
        :class:`~instructerc.data.dialogue.Dialogue`; speakers and texts are read with
        surrounding white space trimmed, as the file readers read them."""
        check_mode(mode, paper_parsing)
        check_progress(progress)
        dialogues = checked_dialogues(dialogues)
        flat = self._predict_checked([(d, i) for d in dialogues for i in range(len(d))], mode, paper_parsing, progress)
        return per_dialogue(flat, dialogues)

    def predict_at(
        self,
        items: Iterable[tuple[Dialogue, int]],
        mode: str = "score",
        paper_parsing: bool = False,
        progress: Any = None,
        cut_before: Sequence[Collection[int]] | None = None,
    ) -> list[Prediction]:
        """Predictions for chosen utterances, e.g. the newest turn of several live conversations
        at once. Items of one dialogue should be adjacent, so their prompts share a prefix.
        ``cut_before``: per item, the earlier utterances of its dialogue that came back
        ``truncated`` (a live conversation's turns): they are cut again as their own prompts cut
        them, so the item reads its history as a whole-dialogue prediction does."""
        check_mode(mode, paper_parsing)
        check_progress(progress)
        items = checked_items(items)
        return self._predict_checked(items, mode, paper_parsing, progress, checked_cut_before(cut_before, len(items)))

    def _predict_checked(
        self,
        items: Sequence[tuple[Dialogue, int]],
        mode: str,
        paper_parsing: bool,
        progress: Any,
        cut_before: Sequence[Collection[int]] | None = None,
    ) -> list[Prediction]:
        if not items:
            return []
        check_indices(items)
        items = with_distinct_keys(items)
        encoded, cuts, _ = self._fitted_with_history(items, cut_before)
        if mode == "score":
            predictions = self._score(encoded, [(d.dataset, d.id) for d, _ in items], progress)
        else:
            predictions = self._generate(encoded, paper_parsing, progress)
        return _with_cuts(predictions, cuts)

    @property
    def caches_turns(self) -> bool:
        """Whether a live conversation's next turn is scored from its key/value cache: with
        templates whose prompts share the dialogue as a prefix; others are re-scored whole."""
        return shares_dialogue_prefix(self.setup.template)

    def predict_turns(self, turns: Sequence[tuple[Dialogue, Any]]) -> list[Prediction]:
        """The newest utterance of each live conversation, scored from its key/value cache
        (:class:`~instructerc.inference.incremental.ConversationCache`, updated in place), all
        conversations in one batch. Same scores as :meth:`predict_at`, within float tolerance.
        Earlier utterances are given as they were said: the cache remembers which came back
        ``truncated`` and cuts them again, as a whole-dialogue prediction reads them."""
        from instructerc.inference.incremental import score_turns

        turns = checked_turns(turns)
        if not turns:
            return []
        newest = [(dialogue, len(dialogue) - 1) for dialogue, _ in turns]
        check_indices(newest)
        measured = [_turns_to_measure(dialogue, cache, self.model, (self.setup, dialogue.dataset)) for dialogue, cache in turns]
        encoded, cuts, earlier_cut = self._fitted_with_history(with_distinct_keys(newest), measured)
        for (dialogue, cache), again, cut_again, cut in zip(turns, measured, earlier_cut, cuts):
            newest_cut = set() if cut is None else {len(dialogue) - 1}  # read so by every later turn
            cache.record_turns(dialogue.utterances, again | {len(dialogue) - 1}, cut_again | newest_cut)
        if self._direct_head is None:
            self._direct_head = head_is_plain(self.model, self.device)
        fresh = [cache for _, cache in turns if cache.tokens == 0]
        self._start_from_first_cache([(cache, e.prompt_ids) for (_, cache), e in zip(turns, encoded) if cache.tokens == 0])
        table = score_turns(
            self.model,
            self.scorer,
            [(cache, e.prompt_ids) for (_, cache), e in zip(turns, encoded)],
            self.device,
            self._direct_head,
            # The user's budget where one is set; else the live path's own, which counts cached
            # positions too (predict's CPU default of 1,024 split the service's batches).
            batch_tokens=self.config.batch_tokens or TURN_BATCH_TOKENS,
            workers=self.config.worker_count(self.device),
        )
        if self._first_cache is None and fresh and fresh[0].states is not None:
            # A copy (the cache copies states it is given): the conversation goes on writing its
            # later turns into its own states. (None: a label set of one label needs no forward
            # pass, so nothing was computed.)
            self._first_cache = ConversationCache(fresh[0].ids, fresh[0].states)
        table = [probabilities.tolist() for probabilities in table]
        self._check_finite(table)
        return _with_cuts([self._prediction(probabilities) for probabilities in table], cuts)

    def _start_from_first_cache(self, fresh: Sequence[tuple[ConversationCache, Sequence[int]]]) -> None:
        """Each new conversation's cache started from the prefix its prompt shares with the first
        conversation scored. Keys and values of a position depend only on the tokens up to it, so
        that prefix (the instruction, often more) is reused as is; score_turns computes from where
        they differ. Only the shared prefix is copied: the whole first conversation (hundreds of
        turns, given at once) made every new cache as large, and a cache store evict that much sooner."""
        if self._first_cache is None:
            return
        first = self._first_cache
        for cache, prompt in fresh:
            shared = common_prefix(first.ids, prompt)
            if shared:
                cache.ids, cache.states = first.ids[:shared], first.states[:, :, :, :shared]

    def predict_next(self, dialogue: Dialogue, cache: Any) -> Prediction:
        """The newest utterance of one growing conversation, scored (``score`` mode) from its
        key/value cache. ``dialogue``: the conversation so far, earlier turns as they were said;
        ``cache``: ``ConversationCache()`` for a new conversation, then the same object with each
        later turn, one per conversation (updated in place; ``copy.copy`` forks it). Same scores as
        :meth:`predict` of the whole dialogue within float rounding (a few hundredths in bf16)."""
        # Checked here so a mistake names this call's arguments, not predict_turns' turns[0][...].
        if not isinstance(cache, ConversationCache):
            raise TypeError(f"cache must be a ConversationCache (ConversationCache() for a new conversation), not {_kind(cache)}")
        dialogue = checked_dialogue(dialogue, "dialogue")
        if not dialogue.utterances:
            raise InputError(
                f"dialogue '{dialogue.id}' has no utterances: a live conversation's newest turn is labelled once it has one",
                field="dialogue.utterances",
            )
        return self.predict_turns([(dialogue, cache)])[0]

    def _check_finite(self, table: Sequence[Sequence[float]]) -> None:
        """Refuses label probabilities that are NaN: the model's numbers overflowed (a model
        trained in bf16 run in float16) or its weights hold NaN or infinities. Written out, they
        would be invalid JSON and a label picked from nothing."""
        if all(math.isfinite(p) for row in table for p in row):
            return
        raise InputError(non_finite_message(self.precision), field="dtype")

    def _prediction(self, probabilities: list[float]) -> Prediction:
        labels = self.label_set.labels
        best = max(range(len(labels)), key=lambda k: probabilities[k])
        return Prediction(label=labels[best], scores=dict(zip(labels, probabilities)))

    def _score(self, encoded: Sequence[Any], dialogue_keys: Sequence[Any], progress: Any) -> list[Prediction]:
        import torch

        per_prompt = len(self.scorer.branch_points)
        sequences = [s for e in encoded for s in self.scorer.sequences(e.prompt_ids)]
        groups = [key for key in dialogue_keys for _ in range(per_prompt)]
        if self._direct_head is None:
            self._direct_head = head_is_plain(self.model, self.device)
        logits = last_token_logits(
            self.model,
            sequences,
            self.tokenizer.pad_token_id,
            *self.config.sizes(self.device),
            self.device,
            groups=groups,
            direct_head=self._direct_head,
            workers=self.config.worker_count(self.device),
        )
        if self.scorer.single_pass:
            table = self.scorer.batch_probabilities(torch.stack(logits)).tolist()
        else:
            table = [self.scorer.probabilities(logits[i * per_prompt : (i + 1) * per_prompt]).tolist() for i in range(len(encoded))]
        self._check_finite(table)
        predictions = [self._prediction(probabilities) for probabilities in table]
        if progress is not None:
            progress.update(len(encoded))
        return predictions

    def _generate(self, encoded: Sequence[Any], paper_parsing: bool, progress: Any) -> list[Prediction]:
        import torch

        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].prompt_ids))
        results: list[Prediction | None] = [None] * len(encoded)
        pad = self.tokenizer.pad_token_id
        size = self.config.generate_batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            prompts = [encoded[i].prompt_ids for i in chunk]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=self.scorer.max_answer_tokens + 2,
                    do_sample=False,
                    pad_token_id=pad,
                    eos_token_id=self.tokenizer.eos_token_id,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
            # An overflowed model generates its first token from NaNs: text that only looks invalid.
            if any(bool(torch.isnan(step).any() or torch.isposinf(step).any()) for step in out.logits):
                raise InputError(non_finite_message(self.precision), field="dtype")
            for row, i in enumerate(chunk):
                text = self.tokenizer.decode(out.sequences[row, width:], skip_special_tokens=True)
                results[i] = Prediction(label=self.parse(text, paper_parsing), generated=text)
            if progress is not None:
                progress.update(len(chunk))
        return [r for r in results if r is not None]

    def parse(self, text: str, paper_parsing: bool = False) -> str | None:
        label = self.label_set.parse_exact(text)
        if label is not None or not paper_parsing:
            return label
        # The paper's repair, for comparison only: the label closest to whatever was generated.
        words = list(self.label_set.verbalizers)
        closest = max(words, key=lambda w: difflib.SequenceMatcher(None, text.strip(), w).ratio())
        return self.label_set.parse_exact(closest)


def non_finite_message(precision: str) -> str:
    """What to do about a model that computed NaN or infinite logits in ``precision``."""
    if precision == "float16":
        return "the model's numbers overflow float16 (its logits came out NaN or infinite): run it in bfloat16 or float32 (--dtype)"
    return f"the model computed NaN or infinite logits in {precision}: its weights may hold NaN or infinite values"


def _turns_to_measure(dialogue: Dialogue, cache: ConversationCache, model: Any, prompt_key: Any) -> set[int]:
    """The earlier turns of a live conversation its newest prompt fits again, each cut only if
    its own prompt cuts it: those its cache saw cut, and those it never measured (a conversation
    given whole to a fresh cache, or a turn edited since), as a whole-dialogue prediction cuts
    them all. Cuts decided for another model (another prompt budget) are measured again."""
    if not cache.computed_by(model):
        cache.forget_turns()
    cache.prompted_under(prompt_key)  # cuts decided under another setup or dataset are measured again
    return cache.cut_turns | cache.unchecked_turns(dialogue.utterances)


_BUILD_HINT = "build one with Dialogue(id, dataset, split, utterances) or read a file with instructerc.data.jsonl.read_jsonl"


def checked_dialogues(dialogues: Any) -> list[Dialogue]:
    """The dialogues as a list (a generator is read once), each checked by :func:`checked_dialogue`.
    A string, a mapping or one lone Dialogue is refused by name: each is iterable, and read as
    dialogues it would fail deep inside prompt building, or not at all."""
    if isinstance(dialogues, Dialogue):
        raise TypeError("dialogues must be a list of Dialogue objects, not one Dialogue: pass [dialogue]")
    if isinstance(dialogues, (str, bytes, Mapping)) or not isinstance(dialogues, Iterable):
        raise TypeError(f"dialogues must be a list of Dialogue objects, not {_kind(dialogues)} ({_BUILD_HINT})")
    return [checked_dialogue(dialogue, f"dialogues[{k}]") for k, dialogue in enumerate(dialogues)]


def checked_items(items: Any) -> list[tuple[Dialogue, int]]:
    """``(dialogue, utterance index)`` pairs as a list, each dialogue checked once however many
    of its utterances are asked for (so items of one dialogue stay one dialogue)."""
    if isinstance(items, (str, bytes, Mapping, Dialogue)) or not isinstance(items, Iterable):
        raise TypeError(f"items must be a list of (Dialogue, utterance index) pairs, not {_kind(items)}")
    # By id, holding the given dialogue too: were it freed, a later one could take its id.
    checked: dict[int, tuple[Any, Dialogue]] = {}
    out = []
    for k, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"items[{k}] must be a (Dialogue, utterance index) pair, not {_kind(item)}")
        dialogue, index = item
        if id(dialogue) not in checked:
            checked[id(dialogue)] = (dialogue, checked_dialogue(dialogue, f"items[{k}][0]"))
        out.append((checked[id(dialogue)][1], index))
    return out


def checked_cut_before(cut_before: Any, count: int) -> list[set[int]] | None:
    """``cut_before`` as one set of utterance indices per item, or a TypeError/InputError naming
    it: a generator, a bare index or ``None`` for an item failed deep inside prompt fitting on a
    bare ``len()`` or ``not iterable``."""
    if cut_before is None:
        return None
    if isinstance(cut_before, (str, bytes, Mapping)) or not isinstance(cut_before, Sequence):
        raise TypeError(f"cut_before must be a list with one collection of utterance indices per item, not {_kind(cut_before)}")
    if len(cut_before) != count:
        raise InputError(f"cut_before has {len(cut_before)} entries for {count} items: one per item", field="cut_before")
    out = []
    for k, entry in enumerate(cut_before):
        if isinstance(entry, (str, bytes, Mapping)) or not isinstance(entry, Collection):
            raise TypeError(f"cut_before[{k}] must be a collection of utterance indices (e.g. set() for none), not {_kind(entry)}")
        bad = [i for i in entry if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
        if bad:
            raise TypeError(f"cut_before[{k}] must hold utterance indices (whole numbers), not {bad[0]!r}")
        out.append({int(i) for i in entry})
    return out


def check_progress(progress: Any) -> None:
    """Refuse a progress bar without ``update(n)`` before the work, not after it: it is only
    called once a chunk has been computed, so the mistake cost a whole prediction first."""
    if progress is not None and not callable(getattr(progress, "update", None)):
        raise TypeError(f"progress must be None or have an update(n) method (a tqdm bar), not {_kind(progress)}")


def checked_turns(turns: Any) -> list[tuple[Dialogue, ConversationCache]]:
    """``(dialogue, cache)`` pairs as a list, each dialogue checked. A cache that is not a
    :class:`ConversationCache` would fail deep inside scoring; one cache given for two turns of
    one call would be cut back and extended by both, and then hold neither conversation's prompt."""
    if isinstance(turns, (str, bytes, Mapping, Dialogue)) or not isinstance(turns, Iterable):
        raise TypeError(f"turns must be a list of (Dialogue, ConversationCache) pairs, not {_kind(turns)}")
    out = []
    owners: dict[int, int] = {}
    for k, turn in enumerate(turns):
        if not isinstance(turn, (tuple, list)) or len(turn) != 2:
            raise TypeError(f"turns[{k}] must be a (Dialogue, ConversationCache) pair, not {_kind(turn)}")
        dialogue, cache = turn
        if not isinstance(cache, ConversationCache):
            raise TypeError(f"turns[{k}][1] must be a ConversationCache (ConversationCache() for a new conversation), not {_kind(cache)}")
        if id(cache) in owners:
            raise InputError(
                f"turns[{k}] reuses the cache of turns[{owners[id(cache)]}]: each conversation needs its own ConversationCache",
                field=f"turns[{k}][1]",
            )
        owners[id(cache)] = k
        dialogue = checked_dialogue(dialogue, f"turns[{k}][0]")
        if not dialogue.utterances:
            # Its newest turn would be index -1, and the error would name an index nobody gave.
            raise InputError(
                f"dialogue '{dialogue.id}' has no utterances: a live conversation's newest turn is labelled once it has one",
                field=f"turns[{k}][0].utterances",
            )
        out.append((dialogue, cache))
    return out


def checked_dialogue(dialogue: Any, where: str) -> Dialogue:
    """``dialogue`` as the model reads it: speakers and texts non-empty strings, in the form the
    file readers and the service read them (speakers :func:`~instructerc.data.text.canonical_speaker`,
    texts trimmed) (so a dialogue built in Python gets the labels the
    same dialogue gets from a file), with no NUL or lone surrogate (the tokenizer cannot
    encode one). Anything else is refused naming ``where`` and the field, e.g.
    ``dialogues[2].utterances[0].speaker``; the dialogue itself is returned when nothing changed."""
    if not isinstance(dialogue, Dialogue):
        raise TypeError(f"{where} must be a Dialogue, not {_kind(dialogue)} ({_BUILD_HINT})")
    if not isinstance(dialogue.utterances, (tuple, list)):
        raise TypeError(f"{where}.utterances must be a tuple of Utterance objects, not {_kind(dialogue.utterances)}")
    # The id keys the dialogue's shared prefixes and demonstrations, and the dataset chooses its
    # label statement and scoring: an int id is read as the file readers read it, other kinds
    # (None, a list) would key nothing or fail deep inside prompt building.
    named = {}
    for name in ("id", "dataset"):
        value = getattr(dialogue, name)
        if name == "id" and isinstance(value, int) and not isinstance(value, bool):
            named[name] = str(value)
        elif not isinstance(value, str):
            raise TypeError(f"{where}.{name} must be a string, not {_kind(value)}")
        elif name == "dataset" and (spelled := benchmark_spelling(value)) != value:
            named[name] = spelled  # "MELD" is meld, as a file's record reads it
    utterances = tuple(_checked_utterance(u, f"{where}.utterances[{k}]") for k, u in enumerate(dialogue.utterances))
    if not named and isinstance(dialogue.utterances, tuple) and all(a is b for a, b in zip(utterances, dialogue.utterances)):
        return dialogue
    return replace(dialogue, utterances=utterances, **named)


def _checked_utterance(utterance: Any, where: str) -> Utterance:
    if not isinstance(utterance, Utterance):
        raise TypeError(f"{where} must be an Utterance, not {_kind(utterance)}")
    trimmed = {}
    for name, empty in (("speaker", "empty speaker"), ("text", "empty utterance text")):
        value = getattr(utterance, name)
        if not isinstance(value, str):
            raise TypeError(f"{where}.{name} must be a string, not {_kind(value)}")
        try:
            check_string(value)
        except TextProblem as problem:
            raise InputError(problem.message, field=f"{where}.{name}") from None
        # str(): a numpy string becomes a plain one
        trimmed[name] = str(canonical_speaker(value) if name == "speaker" else value.strip())
        if not trimmed[name]:
            raise InputError(empty, field=f"{where}.{name}")
        if name == "text" and shows_nothing(trimmed[name]):
            raise InputError("utterance text of invisible characters only", field=f"{where}.{name}")
        if name == "speaker" and breaks_line(trimmed[name]):
            raise InputError(SPEAKER_BREAKS_LINE, field=f"{where}.{name}")
    if all(trimmed[name] == getattr(utterance, name) and type(getattr(utterance, name)) is str for name in trimmed):
        return utterance
    return replace(utterance, **trimmed)


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def checked_device(device: Any) -> Any:
    """``device`` if PyTorch can place a model on it here, else an :class:`InputError` naming it
    (PyTorch's own answer comes from deep inside the first ``.to(device)``: an assertion that
    it was "not compiled with CUDA enabled", or a list of every device type it knows)."""
    import torch

    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device '{device}' (e.g. 'cpu', 'cuda', 'cuda:1')", field="device") from None
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device '{device}' is not available: PyTorch sees no CUDA GPU here (use 'cpu')", field="device")
        if kind.index is not None and kind.index >= count:
            visible = f"PyTorch sees {count} CUDA GPU(s), 'cuda:0' to 'cuda:{count - 1}'"
            raise InputError(f"device '{device}' is not available: {visible}", field="device")
    elif kind.type == "meta":
        # Meta tensors have shapes but no values: the model would load, and the first
        # prediction fail deep inside PyTorch.
        raise InputError(f"device '{device}' holds no data and cannot run a model (use 'cpu')", field="device")
    elif kind.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device '{device}' is not available: this PyTorch or machine has no MPS (use 'cpu')", field="device")
    elif not getattr(getattr(torch, kind.type, None), "is_available", lambda: True)():
        raise InputError(f"device '{device}' is not available here (use 'cpu')", field="device")
    return device


def checked_config(config: Any) -> InferenceConfig:
    if config is None:
        return InferenceConfig()
    if not isinstance(config, InferenceConfig):
        raise TypeError(f"config must be an InferenceConfig or None, not {_kind(config)}")
    return config


def _check_count(value: Any, name: str, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a whole number of at least 1" + (" or None (automatic)" if optional else "")
        raise InputError(f"{name} must be {allowed}, got {value!r}", field=name)


def check_indices(items: Sequence[tuple[Dialogue, int]]) -> None:
    """Refuse an utterance index outside its dialogue: a negative one would read as counted from
    the end, but the prompt's history is counted from the start, so it would show none."""
    for dialogue, index in items:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < len(dialogue):
            raise InputError(
                f"utterance index {index!r} is outside dialogue '{dialogue.id}' of {len(dialogue)} utterance(s)", field="index"
            )


def _with_cuts(predictions: Sequence[Prediction], cuts: Sequence[str | None]) -> list[Prediction]:
    return [p if cut is None else replace(p, truncated=True, cut_text=cut) for p, cut in zip(predictions, cuts)]


def is_cpu(device: Any) -> bool:
    return str(device).startswith("cpu")


def default_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
