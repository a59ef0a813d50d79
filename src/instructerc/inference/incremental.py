"""Scoring live conversations from their key/value caches, many conversations in one forward pass.

A conversation's cache holds the keys and values of the last prompt scored for it. The next
prompt is compared token by token with the cached one; the cache is cut back to their longest
common prefix and only the rest is computed. With the ``dialogue-stream`` template each prompt
extends the previous one, so a new turn costs its own line; with ``dialogue-prefix`` its line and
a short question. Any template gives the same result, only the saving differs.

New turns of several conversations run as one batch: each row is one conversation's new tokens,
its cache padded to the longest in the batch, and a boolean mask lets a row see only its own
cache and its own earlier new tokens. The result equals scoring each prompt from scratch, within
the float tolerance of the compute type (tested).
"""

from __future__ import annotations

import functools
import math
import operator
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from instructerc.inference.parallel import completed
from instructerc.modeling.forward import pair_logits


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ConversationCache:
    """The keys and values of one conversation's last prompt, ``[layers, 2, kv_heads, tokens,
    head_dim]`` in one tensor (one copy moves it whole), and the token ids they were computed for.

    The tensor has room beyond ``tokens`` (a quarter more, at least 64 positions), so a new turn
    is written after the earlier ones instead of copying the whole conversation each turn. States
    given from outside (``ConversationCache(other.ids, other.states)``, to share a prefix) are
    copied into a tensor of this cache's own: neither cache's later turns change the other's.

    It remembers the model that computed its states (:func:`score_turns` records it): given to
    another model (another predictor, the same weights in another precision), it starts afresh.
    And it remembers what the prompts that decided its turns' cuts were built under
    (:meth:`prompted_under`): under another prompt setup (another ``max_length`` or template
    over the same model) or another dataset (whose classes the label statement lists), every
    turn's cut is decided again. Its keys and values stay: they belong to token ids, and
    :func:`score_turns` keeps only the prefix the new prompt shares with them.
    """

    def __init__(self, ids: Sequence[int] = (), states: Any = None) -> None:
        self.ids: list[int] = _token_ids(ids)
        if self.ids and states is None:
            raise ValueError(
                f"a ConversationCache of {len(self.ids)} token ids needs their keys and values (states): "
                "give both, or neither for a new conversation"
            )
        if states is not None and self.ids and _positions(states) < len(self.ids):
            raise ValueError(f"states hold {_positions(states)} positions, fewer than the {len(self.ids)} token ids they are given for")
        self.states = states  # sets _buffer, _owned and _model
        # The turns that came back truncated: a later turn's prompt cuts them again (see
        # Predictor.predict_turns), so a caller may pass the conversation as it was said.
        self.cut_turns: set[int] = set()
        # Per turn, a hash of the (speaker, text) whose cut was decided: a turn never seen (a
        # conversation given whole to a fresh cache) or edited since is measured again.
        self.checked_turns: dict[int, int] = {}
        # What the prompts that decided those cuts were built under (see prompted_under).
        self.prompt_key: Any = None

    def __copy__(self) -> "ConversationCache":
        """A fork: the same conversation so far, continued independently of this one. Copied,
        not shared: the default copy shared ``ids`` (extended in place) and a buffer each cache
        writes its new turns into, so continuing either fork overwrote the other's keys and
        values, and its later labels were silently wrong."""
        fork = ConversationCache(self.ids, self.states)  # a copy of the states, see the states setter
        fork._model = self._model
        fork.cut_turns = set(self.cut_turns)
        fork.checked_turns = dict(self.checked_turns)
        fork.prompt_key = self.prompt_key
        return fork

    def unchecked_turns(self, utterances: Sequence[Any]) -> set[int]:
        """The turns before the newest of ``utterances`` whose cut this cache has not decided:
        never given to it, or given with another speaker or text."""
        return {i for i, u in enumerate(utterances[:-1]) if self.checked_turns.get(i) != hash((u.speaker, u.text))}

    def record_turns(self, utterances: Sequence[Any], measured: set[int], cut: set[int]) -> None:
        """Remember the cuts of the turns in ``measured`` (``cut``: those that were cut), and
        every turn of ``utterances`` as decided."""
        self.cut_turns -= measured - cut
        self.cut_turns |= cut
        self.checked_turns = {i: hash((u.speaker, u.text)) for i, u in enumerate(utterances)}

    def forget_turns(self) -> None:
        """Forget every turn's cut: they were decided for another model's prompt budget."""
        self.cut_turns, self.checked_turns = set(), {}

    def prompted_under(self, key: Any) -> None:
        """Record that this turn's prompts are built under ``key`` (the predictor's PromptSetup
        and the dialogue's dataset), forgetting every turn's cut when the earlier turns were
        decided under another key: a turn that fitted a long budget is cut by a short one, and
        its cut was then trusted, so the newest prompt read that turn uncut (silently other
        scores than the same conversation given whole). Keys are compared member by member,
        each by identity first: one setup per predictor (the service) costs a few pointer
        comparisons a turn, and its caches keep every cut."""
        if self.prompt_key is key:
            return
        if self.prompt_key is not None and self.prompt_key != key:
            self.forget_turns()
        self.prompt_key = key

    def __deepcopy__(self, memo: dict[int, Any]) -> "ConversationCache":
        # The model reference is kept, not copied: it says which model's states these are.
        return self.__copy__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Refused by name (the default failed on the weak model reference): the states are only
        # meaningful with the model object that computed them, which a pickle cannot carry, and
        # continued by another model they would give wrong labels without a word.
        raise TypeError(
            "a ConversationCache cannot be pickled: its keys and values belong to the model that computed them "
            "in this process; keep the conversation's turns and start a new ConversationCache (predict_next "
            "rescores them, same labels); copy.copy forks a cache in this process"
        )

    def computed_by(self, model: Any) -> bool:
        """Whether the states can be continued by ``model`` (an empty cache or one of unrecorded
        origin can: states given from outside are the caller's to vouch for)."""
        return self._model is None or not self.ids or self._model() is model

    def record_model(self, model: Any) -> None:
        # Weak: a cache kept in a store must not keep a replaced model alive.
        try:
            self._model = weakref.ref(model)
        except TypeError:  # an object without weak references (not a torch module)
            self._model = lambda: model

    @property
    def states(self) -> Any:
        """The keys and values of ``ids`` (a view; ``None`` when empty)."""
        return None if self._buffer is None or not self.ids else self._buffer[:, :, :, : len(self.ids)]

    @states.setter
    def states(self, states: Any) -> None:
        # Copied (with room for later turns), not shared: the cache they came from writes its
        # later turns in place, and once its conversation is edited or its history cut, over
        # positions given here, which silently changed this cache's keys and values under
        # unchanged ids. Costs what the first turn added used to: it copied them then.
        self._buffer, self._owned, self._model = _adopted(states), states is not None, None

    @property
    def tokens(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes held, the room for later turns included."""
        return 0 if self._buffer is None else self._buffer.numel() * self._buffer.element_size()

    def crop(self, length: int) -> None:
        if length >= self.tokens:
            return
        self.ids = self.ids[:length]
        if not length:
            self._buffer, self._owned, self._model = None, False, None

    def has_room(self, start: int, count: int) -> bool:
        """Whether ``count`` states may be written in place after the first ``start`` (a buffer of
        its own, long enough; ``start`` > 0, since an empty cache holds no buffer to keep)."""
        return 0 < start <= self.tokens and self._owned and self._buffer is not None and start + count <= self._buffer.shape[3]

    @property
    def buffer(self) -> Any:
        """The whole ``[layers, 2, kv_heads, room, head_dim]`` tensor, room for later turns included."""
        return self._buffer

    def extend(self, ids: Sequence[int], states: Any) -> None:
        """Append the keys and values ``[layers, 2, kv_heads, len(ids), head_dim]`` of ``ids``."""
        start, end = self.tokens, self.tokens + len(ids)
        if self._buffer is None or not self._owned or end > self._buffer.shape[3]:
            shape = list(states.shape)
            shape[3] = _room(end)
            buffer = states.new_empty(shape)
            if start:
                buffer[:, :, :, :start] = self._buffer[:, :, :, :start]
            self._buffer, self._owned = buffer, True
        target = self._buffer[:, :, :, start:end]
        if not _same_view(target, states):  # a pass over this conversation alone wrote them in place
            target.copy_(states)
        self.ids += list(ids)


def _room(tokens: int) -> int:
    """Positions allocated for ``tokens``: a quarter more, at least 64, for later turns."""
    return tokens + max(64, tokens // 4)


def _token_ids(ids: Any) -> list[int]:
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be a sequence of token ids (integers), not {type(ids).__name__}")
    try:
        return [operator.index(i) for i in ids]
    except TypeError:
        raise TypeError("ids must be a sequence of token ids (integers)") from None


def _positions(states: Any) -> int:
    """The token positions ``states`` hold, refusing what is no ``[layers, 2, kv_heads, tokens, head_dim]`` tensor."""
    shape = getattr(states, "shape", None)
    expected = "a tensor [layers, 2, kv_heads, tokens, head_dim] (a ConversationCache's .states)"
    if shape is None:
        raise TypeError(f"states must be {expected}, not {type(states).__name__}")
    if len(shape) != 5:
        raise ValueError(f"states must be {expected}, not of shape {tuple(shape)}")
    return int(shape[3])


def _adopted(states: Any) -> Any:
    """A buffer of the cache's own holding ``states``, with room for later turns (``None``: none)."""
    if states is None:
        return None
    tokens = _positions(states)
    shape = list(states.shape)
    shape[3] = _room(tokens)
    buffer = states.new_empty(shape)
    buffer[:, :, :, :tokens] = states
    return buffer


def _same_view(a: Any, b: Any) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


class CacheStore:
    """Conversation caches bounded in bytes, least recently used evicted first. An evicted
    conversation is re-scored from its text on its next turn (same result, one slower turn).
    Thread-safe: the model's worker thread reads and writes, request handlers discard."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be at least 0")
        self.max_bytes = max_bytes
        self._caches: OrderedDict[str, ConversationCache] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0
        # Caches out of the store while a turn is scored, and those of them discarded meanwhile
        # (the conversation was deleted or expired): their put() must not bring them back.
        self._taken: set[str] = set()
        self._discarded: set[str] = set()

    def __len__(self) -> int:
        return len(self._caches)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def take(self, key: str) -> ConversationCache:
        """The conversation's cache (a fresh one if it has none), out of the store while in use."""
        with self._lock:
            self._taken.add(key)
            self._discarded.discard(key)
            cache = self._caches.pop(key, None)
            if cache is None:
                return ConversationCache()
            self._bytes -= cache.nbytes
            return cache

    def put(self, key: str, cache: ConversationCache) -> None:
        """Keep ``cache`` as the most recently used; evict the least recently used beyond the bound
        (a cache larger than the whole bound is not kept)."""
        size = cache.nbytes
        with self._lock:
            self._taken.discard(key)
            if key in self._discarded:
                self._discarded.discard(key)
                return
            old = self._caches.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                self.evictions += 1
                return
            while self._caches and self._bytes + size > self.max_bytes:
                _, evicted = self._caches.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1
            self._caches[key] = cache
            self._bytes += size

    def release(self, key: str) -> None:
        """End a :meth:`take` without keeping its cache (its conversation is gone); every take
        ends in this or :meth:`put`, or the key would stay in the store's books for ever."""
        with self._lock:
            self._taken.discard(key)
            self._discarded.discard(key)

    def discard(self, key: str) -> None:
        """Forget the conversation's cache, also one taken out for a turn now being scored."""
        with self._lock:
            if key in self._taken:
                self._discarded.add(key)
            cache = self._caches.pop(key, None)
            if cache is not None:
                self._bytes -= cache.nbytes


@dataclass(frozen=True)
class _Row:
    """One forward-pass row: a conversation's cache continued by ``new`` tokens."""

    turn: int  # which turn (conversation) of the batch
    cache: ConversationCache
    shared: int  # tokens of the cache kept
    new: tuple[int, ...]
    prompt_new: int  # how many of the new tokens are the prompt's (the rest are label tokens)


# Padded key/value positions per pass of live turns, cached prefixes included (unlike predict's
# budget, which counts prompt tokens): a turn's few new tokens sit on hundreds of cached ones,
# and 16 live conversations under predict's CPU budget of 1,024 took several passes where one
# does (serve_load's cache mode: 55 against 50 requests/s on 2 cores).
TURN_BATCH_TOKENS = 16384


def score_turns(
    model: Any,
    scorer: Any,
    turns: Sequence[tuple[ConversationCache, Sequence[int]]],
    device: Any,
    direct_head: bool = False,
    batch_tokens: int = TURN_BATCH_TOKENS,
    workers: int = 1,
) -> list[Any]:
    """Label probabilities of each (cache, prompt ids) turn; each cache is updated to hold its prompt.

    A turn needs one row per branch point of the label trie (one for most label sets); its rows
    keep the same cached prefix. Rows are batched by cache length under ``batch_tokens`` padded
    key/value positions per forward pass. With ``workers`` > 1 (CPU), the turns are split into at
    least that many passes, run side by side on one intra-op thread each
    (:mod:`instructerc.inference.parallel`): a pass over a few new tokens a row is mostly
    normalisation, rotary and element-wise kernels too small to spread over cores, so two
    one-thread passes keep both cores busy where one two-thread pass does not.
    """
    if not turns:
        return []
    rows = []
    for index, (cache, prompt) in enumerate(turns):
        if not cache.computed_by(model):
            # Another model's keys and values: continuing them would score silently wrong (or fail
            # deep in attention on a dtype mismatch), so the conversation is scored from its text.
            cache.crop(0)
        prompt = tuple(prompt)
        # Every row needs a token of its own to read logits from, hence at most len(prompt) - 1.
        shared = min(common_prefix(cache.ids, prompt), len(prompt) - 1)
        rows += [_Row(index, cache, shared, sequence[shared:], len(prompt) - shared) for sequence in scorer.sequences(prompt)]
    logits: list[Any] = [None] * len(rows)
    chunks = _split_for_workers(_chunks(rows, batch_tokens), rows, workers)

    def run(chunk: list[int]) -> tuple[list[int], list[Any]]:
        # Each turn's cache is in exactly one chunk (predictor.checked_turns refuses a cache given
        # twice), so passes side by side never write the same cache.
        chunk_logits = _forward(model, [rows[i] for i in chunk], device, direct_head)
        for i in chunk:
            # Here, not after every pass: a batch failing in a later pass leaves this pass's
            # caches holding this model's states, to be refused by any other model.
            rows[i].cache.record_model(model)
        return chunk, chunk_logits

    for chunk, chunk_logits in completed(run, chunks, min(workers, len(chunks))):
        for i, row_logits in zip(chunk, chunk_logits):
            logits[i] = row_logits
    per_turn = len(rows) // len(turns)  # one row per branch point of the trie, the same for every prompt
    return [scorer.probabilities(logits[k * per_turn : (k + 1) * per_turn]) for k in range(len(turns))]


# The cost of a forward pass over new turns, in units of one padded new token, measured with the
# default model on 2 CPU cores: a pass costs about 80 units whatever its size (30 layers of Python
# and kernel launches, every weight read), then about 1 per padded new token (about 1 ms); padded
# cached positions are cheap (copies and attention only).
PASS_COST = 80.0
CACHED_POSITION_COST = 0.05


def _chunks(rows: list[_Row], batch_tokens: int) -> list[list[int]]:
    """Rows split into forward passes at the least cost (see ``PASS_COST``), each under
    ``batch_tokens`` padded positions. A turn's rows stay in one pass, since they all update one
    cache. Every row of a pass is padded to its longest, so a fresh conversation's whole prompt
    (70+ tokens) among other conversations' next utterances (15-20) gets a pass of its own when
    that is cheaper than padding them all to its length."""
    by_turn: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_turn.setdefault(row.turn, []).append(i)
    # Per turn: (new tokens of its longest row, cached tokens of its longest row, its rows).
    groups = sorted((max(len(rows[i].new) for i in g), max(rows[i].shared for i in g), g) for g in by_turn.values())
    # best[k]: the least cost of passes over groups[:k], the last of which starts at start_of[k].
    best = [0.0] + [math.inf] * len(groups)
    start_of = [0] * (len(groups) + 1)
    for end in range(1, len(groups) + 1):
        count, width, past = 0, 0, 0
        for start in range(end - 1, -1, -1):
            group_width, group_past, members = groups[start]
            count += len(members)
            width, past = max(width, group_width), max(past, group_past)
            if start < end - 1 and (width + past) * count > batch_tokens:
                break
            cost = best[start] + PASS_COST + count * width + CACHED_POSITION_COST * count * past
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    chunks: list[list[int]] = []
    end = len(groups)
    while end > 0:
        chunks.append([i for _, _, members in groups[start_of[end] : end] for i in members])
        end = start_of[end]
    return chunks[::-1]


def _split_for_workers(chunks: list[list[int]], rows: list[_Row], workers: int) -> list[list[int]]:
    """``chunks`` with the one of most turns halved (a turn's rows kept together) until there are
    ``workers`` of them or none has two turns left. The halves are of neighbouring widths, since
    :func:`_chunks` orders a chunk's turns by their new tokens."""
    chunks = [list(chunk) for chunk in chunks]
    while chunks and len(chunks) < workers:
        turns_of = [list(dict.fromkeys(rows[i].turn for i in chunk)) for chunk in chunks]
        widest = max(range(len(chunks)), key=lambda k: len(turns_of[k]))
        if len(turns_of[widest]) < 2:
            break
        first = set(turns_of[widest][: len(turns_of[widest]) // 2])
        chunk = chunks.pop(widest)
        chunks[widest:widest] = [[i for i in chunk if rows[i].turn in first], [i for i in chunk if rows[i].turn not in first]]
    return chunks


def _forward(model: Any, rows: list[_Row], device: Any, direct_head: bool) -> list[Any]:
    """Logits after each row's last new token, from one forward pass; stores each turn's new
    keys and values in its cache (from its first row, which starts with the prompt itself)."""
    import torch

    past = max(row.shared for row in rows)
    width = max(len(row.new) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    positions = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), 1, width, past + width, dtype=torch.bool, device=device)
    own = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    for r, row in enumerate(rows):
        n = len(row.new)
        ids[r, :n] = torch.tensor(row.new, device=device)
        positions[r] = torch.arange(row.shared, row.shared + width, device=device)
        mask[r, 0, :, : row.shared] = True
        mask[r, 0, :, past:] = own
        mask[r, 0, n:, : row.shared] = False  # padding queries see only themselves: no empty softmax
        mask[r, 0, n:, past:] = torch.eye(width, dtype=torch.bool, device=device)[n:]
    cache, padded = _padded_cache(rows, past, width, device)
    last = torch.tensor([len(row.new) - 1 for row in rows], device=device)
    with torch.inference_mode():
        logits = pair_logits(model, ids, mask, positions, torch.arange(len(rows), device=device), last, cache, direct_head)
    _store(rows, _new_states(cache, padded, past))
    return list(logits)


def _padded_cache(rows: list[_Row], past: int, width: int, device: Any) -> tuple[Any, Any]:
    """(a transformers cache for the pass, its keys and values ``[layers, 2, rows, kv_heads,
    past + width, head_dim]``): each row's kept prefix, zeros after it up to ``past``; the pass
    writes its new keys and values into the last ``width`` positions."""
    import torch
    from transformers import DynamicCache

    if past == 0:
        return DynamicCache(), None
    slot_layer = _slot_layer_class()
    if slot_layer is not None and len(rows) == 1 and rows[0].cache.has_room(rows[0].shared, width):
        return _own_buffer_cache(rows[0], width, slot_layer)
    states = next(row.cache.states for row in rows if row.shared)
    layers, _, heads, _, size = states.shape
    padded = torch.zeros((layers, 2, len(rows), heads, past + (width if slot_layer else 0), size), dtype=states.dtype, device=device)
    for r, row in enumerate(rows):
        if row.shared:
            padded[:, :, r, :, : row.shared] = row.cache.states[:, :, :, : row.shared]
    if slot_layer is None:  # transformers without cache layers: it concatenates the new states
        return _cache_from([(padded[layer, 0], padded[layer, 1]) for layer in range(layers)], DynamicCache), None
    cache = DynamicCache()
    cache.layers = [slot_layer(padded[layer, 0], padded[layer, 1], past) for layer in range(layers)]
    return cache, padded


def _own_buffer_cache(row: _Row, width: int, slot_layer: Any) -> tuple[Any, Any]:
    """The cache of a pass over one conversation, in that conversation's own buffer: the pass
    writes its new keys and values where :meth:`ConversationCache.extend` keeps them, so a long
    conversation's turn does not copy its whole cache (at 80 turns, 1,600 positions in 30 layers)
    into a batch and back. The conversation is first cut back to the kept prefix, so a pass that
    fails leaves a shorter, still consistent cache."""
    from transformers import DynamicCache

    row.cache.crop(row.shared)
    buffer = row.cache.buffer
    cache = DynamicCache()
    cache.layers = [slot_layer(buffer[layer, 0][None], buffer[layer, 1][None], row.shared) for layer in range(buffer.shape[0])]
    return cache, buffer[:, :, None]


@functools.lru_cache(maxsize=1)
def _slot_layer_class() -> Any:
    """A cache layer whose keys and values are allocated at the pass's full length, so a layer
    writes its new states in place: DynamicCache concatenates the whole padded cache with them,
    in every layer of every pass. ``None`` with transformers before cache layers (4.x)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class SlotLayer(DynamicLayer):
        def __init__(self, keys: Any, values: Any, filled: int) -> None:
            super().__init__()
            self.keys, self.values, self.filled = keys, values, filled
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            end = self.filled + key_states.shape[-2]
            self.keys[:, :, self.filled : end] = key_states
            self.values[:, :, self.filled : end] = value_states
            self.filled = end
            return self.keys[:, :, :end], self.values[:, :, :end]

        def get_seq_length(self) -> int:
            return self.filled

    return SlotLayer


def _cache_from(layers: list[tuple[Any, Any]], cache_class: Any) -> Any:
    if hasattr(cache_class, "from_legacy_cache"):  # transformers 4.x
        return cache_class.from_legacy_cache(tuple(layers))
    return cache_class(layers)


def _layers_of(cache: Any) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values) ``[rows, kv_heads, tokens, head_dim]`` of a transformers cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _new_states(cache: Any, padded: Any, past: int) -> Callable[[int, int], Any]:
    """``(row, n) ->`` the keys and values ``[layers, 2, kv_heads, n, head_dim]`` the pass
    computed for the row's first ``n`` new tokens: a view of ``padded`` when the pass wrote
    into it, else gathered from the cache's layers."""
    import torch

    if padded is not None:
        return lambda r, n: padded[:, :, r, :, past : past + n]
    layers = _layers_of(cache)
    return lambda r, n: torch.stack([torch.stack((keys[r, :, past : past + n], values[r, :, past : past + n])) for keys, values in layers])


def _store(rows: list[_Row], new_states: Callable[[int, int], Any]) -> None:
    seen = set()
    for r, row in enumerate(rows):
        if row.turn in seen:
            continue  # every row of a turn starts with its prompt; the first one's is kept
        seen.add(row.turn)
        row.cache.crop(row.shared)
        row.cache.extend(row.new[: row.prompt_new], new_states(r, row.prompt_new))


__all__ = ["CacheStore", "ConversationCache", "common_prefix", "score_turns"]
