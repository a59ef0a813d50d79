"""The conversation store: bounded in count (least recently used evicted) and in idle time."""

from __future__ import annotations

import itertools

from instructerc.data.dialogue import Utterance
from instructerc.labels.prediction import Prediction
from instructerc.service.store import ConversationStore, Turn


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_store(max_conversations: int = 3, max_idle_seconds: float = 60.0) -> tuple[ConversationStore, FakeClock]:
    clock = FakeClock()
    ids = (f"c{k}" for k in itertools.count())
    return ConversationStore(max_conversations, max_idle_seconds, clock=clock, new_id=lambda: next(ids)), clock


def test_a_created_conversation_can_be_read_back_with_its_turns() -> None:
    store, _ = make_store()
    turn = Turn(Utterance("Ann", "Hi!"), Prediction("joy", {"joy": 1.0}))

    conversation = store.create([turn])

    assert store.get(conversation.id).turns == [turn]
    assert len(store) == 1


def test_a_conversation_idle_for_max_idle_seconds_is_gone() -> None:
    store, clock = make_store(max_idle_seconds=60)
    conversation = store.create()

    clock.advance(59.9)
    assert store.get(conversation.id) is conversation
    clock.advance(59.9)  # idle time counts from the last access, not from creation
    assert store.get(conversation.id) is conversation
    clock.advance(60.0)
    assert store.get(conversation.id) is None
    assert store.expired == 1 and len(store) == 0


def test_expired_conversations_go_on_any_access_so_they_do_not_linger() -> None:
    store, clock = make_store(max_conversations=10, max_idle_seconds=60)
    old = [store.create() for _ in range(3)]
    clock.advance(30)
    fresh = store.create()
    clock.advance(40)

    assert store.purge() == 3
    assert [c.id for c in old if c.id in store] == []
    assert fresh.id in store


def test_creating_beyond_the_limit_evicts_the_least_recently_used() -> None:
    store, clock = make_store(max_conversations=3)
    a, b, c = store.create(), store.create(), store.create()
    clock.advance(1)
    store.get(a.id)  # a is now the most recently used; b the least

    d = store.create()

    assert b.id not in store
    assert {a.id, c.id, d.id} == {x for x in (a.id, b.id, c.id, d.id) if x in store}
    assert len(store) == 3 and store.evicted == 1


def test_the_store_never_holds_more_than_its_limit() -> None:
    store, clock = make_store(max_conversations=5)
    for _ in range(100):
        store.create()
        clock.advance(0.5)
        assert len(store) <= 5
    assert store.evicted == 95


def test_delete_forgets_a_conversation_and_reports_unknown_ids() -> None:
    store, _ = make_store()
    conversation = store.create()

    assert store.delete(conversation.id) is True
    assert store.get(conversation.id) is None
    assert store.delete(conversation.id) is False
    assert store.delete("never-created") is False


def test_a_colliding_random_id_is_drawn_again() -> None:
    ids = iter(["same", "same", "other"])
    store = ConversationStore(10, 60, clock=FakeClock(), new_id=lambda: next(ids))

    first, second = store.create(), store.create()

    assert (first.id, second.id) == ("same", "other")


def test_real_ids_are_long_and_unguessable() -> None:
    store = ConversationStore(10, 60)

    ids = {store.create().id for _ in range(5)}

    assert len(ids) == 5 and all(len(i) >= 20 for i in ids)
