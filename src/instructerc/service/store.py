"""Live conversations kept by the server, so a client sends only its newest utterance.

The store is bounded in count (least recently used evicted first) and in idle time; the caller
bounds the utterances per conversation. Expired conversations are dropped on the next access
of any conversation; until then the count bound still holds. It is used from the event loop
only, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from instructerc.data.dialogue import Utterance

if TYPE_CHECKING:
    from instructerc.labels.prediction import Prediction


@dataclass(frozen=True)
class Turn:
    """One utterance of a conversation and the prediction made when it arrived."""

    utterance: Utterance
    prediction: "Prediction"


@dataclass
class Conversation:
    """A growing conversation.

    Attributes:
        id: random and unguessable: whoever knows it can read the conversation.
        turns: the utterances so far, with their predictions.
        last_used: the store clock's time of the last access.
        lock: held while an utterance is being added, so the turns of one conversation are
            predicted in order while other conversations proceed.
        dataset: the benchmark the client named when it started the conversation (``None``: none).
    """

    id: str
    turns: list[Turn] = field(default_factory=list)
    last_used: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    closed: bool = False  # it left the store (deleted, expired or evicted)
    dataset: str | None = None


def new_conversation_id() -> str:
    return secrets.token_urlsafe(16)


class StoreFull(Exception):
    """Every conversation of a full store was used too recently to be evicted."""


class TokenBucket:
    """At most ``burst`` events at once and ``rate`` per second on average."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """Whether one more event is allowed now (and count it if so)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def give_back(self) -> None:
        """Undo one :meth:`take` whose event did not happen after all."""
        self._tokens = min(float(self.burst), self._tokens + 1)


class ConversationStore:
    """At most ``max_conversations`` conversations, each dropped after ``max_idle_seconds`` unused.

    Every access refreshes a conversation; the dict is kept in order of last use, so both the
    expired and the least recently used conversations are at its front.
    """

    def __init__(
        self,
        max_conversations: int,
        max_idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = new_conversation_id,
        evict_after_idle_seconds: float = 0.0,
        on_drop: Callable[[Conversation], None] | None = None,
    ) -> None:
        self.max_conversations = max_conversations
        # Told of every conversation that goes (deleted, expired or evicted), so what is kept
        # beside the store for it (its key/value cache) goes too.
        self._on_drop = on_drop
        self.max_idle_seconds = max_idle_seconds
        # A full store evicts only conversations unused this long: new ones never push out those in use.
        self.evict_after_idle_seconds = evict_after_idle_seconds
        self._clock = clock
        self._new_id = new_id
        self._conversations: OrderedDict[str, Conversation] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._conversations)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._conversations

    def has_room(self) -> bool:
        """Whether :meth:`create` would succeed now (the store has room, or a conversation idle long enough to evict)."""
        now = self._clock()
        self._drop_expired(now)
        if len(self._conversations) < self.max_conversations:
            return True
        oldest = next(iter(self._conversations.values()))
        # A turn in flight (its lock held) is use, however long ago the turn arrived: evicting the
        # conversation would answer that turn and then lose it with everything before it.
        return now - oldest.last_used >= self.evict_after_idle_seconds and not oldest.lock.locked()

    def create(self, turns: list[Turn] | None = None, dataset: str | None = None) -> Conversation:
        """A new conversation; the least recently used one goes if the store is full and it has
        been idle ``evict_after_idle_seconds``, else :class:`StoreFull`."""
        if not self.has_room():
            raise StoreFull(f"all {len(self._conversations)} conversations are in use; retry later")
        now = self._clock()
        while len(self._conversations) >= self.max_conversations:
            _, evicted = self._conversations.popitem(last=False)
            self.evicted += 1
            self._dropped(evicted)
        conversation_id = self._new_id()
        while conversation_id in self._conversations:
            conversation_id = self._new_id()
        conversation = Conversation(id=conversation_id, turns=list(turns or []), last_used=now, dataset=dataset)
        self._conversations[conversation_id] = conversation
        return conversation

    def get(self, conversation_id: str) -> Conversation | None:
        """The conversation, refreshed; ``None`` when unknown, expired or evicted."""
        now = self._clock()
        self._drop_expired(now)
        conversation = self._conversations.get(conversation_id)
        if conversation is not None:
            conversation.last_used = now
            self._conversations.move_to_end(conversation_id)
        return conversation

    def touch(self, conversation: Conversation) -> None:
        """Count ``conversation`` as used now, if it is still stored. A turn is use until it is
        answered: its idle time must start then, not when the turn arrived, or a turn that waited
        for the model longer than the idle bounds leaves its conversation to be evicted or
        expired the moment it is answered."""
        if self._conversations.get(conversation.id) is conversation:
            conversation.last_used = self._clock()
            self._conversations.move_to_end(conversation.id)

    def delete(self, conversation_id: str) -> bool:
        self._drop_expired(self._clock())
        conversation = self._conversations.pop(conversation_id, None)
        if conversation is None:
            return False
        self._dropped(conversation)
        return True

    def purge(self) -> int:
        """Drop expired conversations now; returns how many went."""
        before = len(self._conversations)
        self._drop_expired(self._clock())
        return before - len(self._conversations)

    def _drop_expired(self, now: float) -> None:
        while self._conversations:
            oldest = next(iter(self._conversations.values()))
            if now - oldest.last_used < self.max_idle_seconds:
                break
            if oldest.lock.locked():
                # A turn in flight or queued is use, however long ago it arrived: expiring the
                # conversation would answer that turn and then lose it with everything before it.
                oldest.last_used = now
                self._conversations.move_to_end(oldest.id)
                continue
            _, expired = self._conversations.popitem(last=False)
            self.expired += 1
            self._dropped(expired)

    def _dropped(self, conversation: Conversation) -> None:
        if self._on_drop is not None:
            self._on_drop(conversation)
