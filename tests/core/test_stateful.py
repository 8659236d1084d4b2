"""A RedisSet behaves like a Python ``set``, step after step, whatever the order of operations.

Hypothesis drives one RedisSet field beside a plain Python ``set`` (the model) through random
sequences of: immediate calls (``aadd``, ``aremove``, ``apop``, ...); transactions of sync mutators
and buffered async ones; writes by a second instance of the same model behind the first one's back,
followed by the first one's ``&=`` / ``^=``, which must use the server's members, not its stale
local mirror; aborted transactions (nothing written); set algebra against a second saved set;
``amove`` between the two sets and the ``astore_*`` commands into either, immediate and in
transactions; and ``asave(if_unchanged=True)``, which must succeed exactly when no second
instance wrote since the first one last read or wrote (its version kept in step by its own
writes), and otherwise raise ``ConflictError`` and write nothing.
After every step the server must hold exactly the model: ``amembers()``, ``asize()``, the raw
canonical members of the SET key, and the second set too.

One machine per member type: ``str``; ``int`` and ``float``, where canonical encoding must keep
Python's set semantics (``1`` and ``1.0`` are one float member, so are ``-0.0`` and ``0.0``).
Hypothesis rules are sync, so each machine runs its own event loop, client and ``ledgerset.init``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import Field
from redis.asyncio import Redis

import ledgerset
from ledgerset import AtomicRedisModel, ConflictError, RedisSet


class StatefulArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class StatefulTagPool(AtomicRedisModel):
    tags: RedisSet[str] = Field(default_factory=RedisSet)


class StatefulIntTags(AtomicRedisModel):
    tags: RedisSet[int] = Field(default_factory=RedisSet)


class StatefulFloatTags(AtomicRedisModel):
    tags: RedisSet[float] = Field(default_factory=RedisSet)


SETTINGS = settings(
    max_examples=40, stateful_step_count=25, deadline=None, report_multiple_bugs=False
)
# Hypothesis stops shrinking after 5 minutes; a failure must end as a minimal example, not as a
# pytest-timeout (it takes seconds when all is well).
pytestmark = pytest.mark.timeout(420)

# Each member's stored form (canonical JSON); a float model member like 1 or -0.0 finds its entry
# because it equals 1.0 / 0.0 in Python.
STR_STORED = {s: json.dumps(s).encode() for s in ("", "a", "b", "python", "Redis", "ü")}
INT_STORED = {n: str(n).encode() for n in range(-3, 4)}
FLOAT_STORED = {0.0: b"0.0", 1.0: b"1.0", 2.5: b"2.5"}

STR_MEMBERS = st.sampled_from(sorted(STR_STORED))
INT_MEMBERS = st.integers(-3, 3)
FLOAT_MEMBERS = st.sampled_from([0.0, -0.0, 1.0, 1, 2.5])

T = TypeVar("T")
Op = tuple[str, tuple[Any, ...]]

# Async mutators can be buffered in a transaction too (they return None there).
ASYNC_OPS = {"aadd", "aadd_many", "aremove", "aclear"}
# What each op does to the Python model; inside a transaction remove acts like discard.
MODEL_OP = {
    "remove": "discard",
    "aadd": "add",
    "aadd_many": "update",
    "aremove": "discard",
    "aclear": "clear",
}


class _Abort(Exception):
    """Raised inside a transaction block to abandon it."""


@dataclass
class _Model:
    """The Python model of one set field, held like a field so ``holder.tags |= x`` works alike."""

    tags: set[Any] = field(default_factory=set)


def _apply(holder: Any, op: Op) -> None:
    """Apply a sync mutator to ``holder.tags`` (a model instance's RedisSet, or a ``_Model``)."""
    name, args = op
    if name == "|=":
        holder.tags |= args[0]
    elif name == "&=":
        holder.tags &= args[0]
    elif name == "-=":
        holder.tags -= args[0]
    elif name == "^=":
        holder.tags ^= args[0]
    else:
        getattr(holder.tags, name)(*args)


def _apply_to_model(model: _Model, ops: Iterable[Op]) -> None:
    for name, args in ops:
        _apply(model, (MODEL_OP.get(name, name), args))


async def _buffer(article: Any, op: Op) -> None:
    """Apply ``op`` to ``article.tags`` inside an open transaction."""
    name, args = op
    if name in ASYNC_OPS:
        assert await getattr(article.tags, name)(*args) is None  # buffered: no result yet
    else:
        _apply(article, op)


def _ops(members: st.SearchStrategy[Any], *, server_side_only: bool = False) -> Any:
    """A list of ops for a transaction; ``server_side_only``: only the ones computed on Redis."""
    some = st.lists(members, max_size=3)
    several = st.lists(some, max_size=2).map(tuple)
    a_set = st.tuples(st.sets(members, max_size=3))
    one = st.tuples(members)
    choices: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
        "intersection_update": several,
        "symmetric_difference_update": st.tuples(some),
        "&=": a_set,
        "^=": a_set,
    }
    if not server_side_only:
        choices |= {
            "add": one,
            "update": several,
            "discard": one,
            "remove": one,
            "clear": st.just(()),
            "difference_update": several,
            "|=": a_set,
            "-=": a_set,
            "aadd": one,
            "aadd_many": st.tuples(some),
            "aremove": one,
            "aclear": st.just(()),
        }
    op = st.one_of([st.tuples(st.just(name), args) for name, args in choices.items()])
    return st.lists(op, min_size=1 if server_side_only else 0, max_size=6)


def _foreign_writes(members: st.SearchStrategy[Any]) -> Any:
    """Writes by a second instance: immediate ones, or a transaction of ``&=`` / ``^=``."""
    only_retain_toggle = st.lists(
        st.tuples(st.sampled_from(["&=", "^="]), st.tuples(st.sets(members, max_size=3))),
        min_size=1,
        max_size=3,
    )
    write = st.one_of(
        st.tuples(st.just("aadd"), st.tuples(members)),
        st.tuples(st.just("aremove"), st.tuples(members)),
        st.tuples(st.just("aclear"), st.just(())),
        st.tuples(st.just("transaction"), st.tuples(only_retain_toggle)),
    )
    return st.lists(write, min_size=1, max_size=3)


class _SetMachine(RuleBasedStateMachine):
    """The plumbing: an event loop, a client, a flushed database, two saved sets and models."""

    model_cls: type[AtomicRedisModel]
    pool_cls: type[AtomicRedisModel]
    member_type: type
    stored: dict[Any, bytes]

    def __init__(self, url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Redis.from_url(url)
        self.model = _Model()
        self.pool_model = _Model()
        #: Whether a second instance wrote since the first one last read or wrote the model.
        self.stale = False
        self.article, self.pool = self.run(self._start())
        # The spec's key layout: what a user of redis-cli sees.
        self.set_key = f"__rapyer_special__:{self.model_cls.__name__}:{self.article.pk}:tags"

    async def _start(self) -> tuple[Any, Any]:
        await self.client.flushdb()
        await ledgerset.init(redis=self.client)
        return await self.model_cls().asave(), await self.pool_cls().asave()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()

    @invariant()
    def server_holds_the_model(self) -> None:
        members, size, raw, exists, pool_members = self.run(self._observe())
        assert members == self.model.tags
        assert size == len(self.model.tags)
        assert all(type(member) is self.member_type for member in members), members
        assert raw == {self.stored[member] for member in self.model.tags}
        assert exists == bool(self.model.tags)  # an empty set has no key
        assert pool_members == self.pool_model.tags

    async def _observe(self) -> tuple[Any, ...]:
        tags = self.article.tags
        return (
            await tags.amembers(),
            await tags.asize(),
            await self.client.smembers(self.set_key),
            await self.client.exists(self.set_key),
            await self.pool.tags.amembers(),
        )

    async def _commit(self, article: Any, ops: list[Op]) -> None:
        size_before = len(self.model.tags)
        async with article.apipeline():
            for op in ops:
                await _buffer(article, op)
            assert await article.tags.asize() == size_before  # reads see the state before commit
        _apply_to_model(self.model, ops)

    async def _write_behind_its_back(self, writes: list[Op]) -> None:
        self.stale = True
        other = await self.model_cls.aget(self.article.key)
        assert other.tags == self.model.tags  # aget loads the members
        for name, args in writes:
            if name == "transaction":
                await self._commit(other, args[0])
            elif name == "aremove":
                assert await other.tags.aremove(*args) is (args[0] in self.model.tags)
                self.model.tags.discard(args[0])
            else:
                await getattr(other.tags, name)(*args)
                _apply_to_model(self.model, [(name, args)])


def _machine(
    name: str,
    model_cls: type[AtomicRedisModel],
    pool_cls: type[AtomicRedisModel],
    members: st.SearchStrategy[Any],
    member_type: type,
    stored: dict[Any, bytes],
) -> type[_SetMachine]:
    """A state machine whose members are drawn from ``members``."""
    some = st.lists(members, max_size=4)
    operands = st.lists(st.sampled_from(["pool", "itself"]), max_size=3)

    class Machine(_SetMachine):
        # -- immediate calls ----------------------------------------------------------------

        @rule(member=members)
        def aadd(self, member: Any) -> None:
            self.run(self.article.tags.aadd(member))
            self.model.tags.add(member)

        @rule(values=some)
        def aadd_many(self, values: list[Any]) -> None:
            self.run(self.article.tags.aadd_many(values))
            self.model.tags.update(values)

        @rule(member=members)
        def aremove(self, member: Any) -> None:
            removed = self.run(self.article.tags.aremove(member))
            assert removed is (member in self.model.tags)
            self.model.tags.discard(member)

        # SPOP picks at random; Hypothesis needs each step to be repeatable, so a pick among
        # several members is put back after it is checked.
        @precondition(lambda self: len(self.model.tags) <= 1)
        @rule()
        def apop(self) -> None:
            popped = self.run(self.article.tags.apop())
            if not self.model.tags:
                assert popped is None
                return
            assert type(popped) is self.member_type
            assert popped in self.model.tags
            self.model.tags.remove(popped)

        @precondition(lambda self: len(self.model.tags) > 1)
        @rule()
        def apop_one_of_several_then_put_it_back(self) -> None:
            popped, size, still_there = self.run(self._pop())
            assert type(popped) is self.member_type
            assert popped in self.model.tags
            assert size == len(self.model.tags) - 1
            assert not still_there
            self.run(self.article.tags.aadd(popped))

        async def _pop(self) -> tuple[Any, int, bool]:
            tags = self.article.tags
            popped = await tags.apop()
            return popped, await tags.asize(), await tags.acontains(popped)

        @rule()
        def aclear(self) -> None:
            self.run(self.article.tags.aclear())
            self.model.tags.clear()

        @rule(member=members)
        def acontains(self, member: Any) -> None:
            assert self.run(self.article.tags.acontains(member)) is (member in self.model.tags)

        # -- transactions -------------------------------------------------------------------

        @rule(ops=_ops(members))
        def transaction(self, ops: list[Op]) -> None:
            self.run(self._commit(self.article, ops))

        @rule(ops=_ops(members))
        def aborted_transaction(self, ops: list[Op]) -> None:
            async def abandon() -> None:
                async with self.article.apipeline():
                    for op in ops:
                        await _buffer(self.article, op)
                    raise _Abort

            with pytest.raises(_Abort):
                self.run(abandon())

        # -- a second instance writes behind the first one's back ---------------------------

        @rule(writes=_foreign_writes(members))
        def writes_behind_its_back(self, writes: list[Op]) -> None:
            self.run(self._write_behind_its_back(writes))

        @rule(writes=_foreign_writes(members), ops=_ops(members, server_side_only=True))
        def retain_or_toggle_with_a_stale_mirror(self, writes: list[Op], ops: list[Op]) -> None:
            self.run(self._write_behind_its_back(writes))  # nothing refreshes our mirror here
            self.run(self._commit(self.article, ops))

        # -- set algebra against a second saved set -----------------------------------------

        @rule(values=some)
        def pool_aadd_many(self, values: list[Any]) -> None:
            self.run(self.pool.tags.aadd_many(values))
            self.pool_model.tags.update(values)

        @rule(member=members)
        def pool_aremove(self, member: Any) -> None:
            removed = self.run(self.pool.tags.aremove(member))
            assert removed is (member in self.pool_model.tags)
            self.pool_model.tags.discard(member)

        @rule()
        def pool_aclear(self) -> None:
            self.run(self.pool.tags.aclear())
            self.pool_model.tags.clear()

        @rule(operands=operands)
        def aunion(self, operands: list[str]) -> None:
            self._check_algebra("aunion", "union", operands)

        @rule(operands=operands)
        def aintersect(self, operands: list[str]) -> None:
            self._check_algebra("aintersect", "intersection", operands)

        @rule(operands=operands)
        def adifference(self, operands: list[str]) -> None:
            self._check_algebra("adifference", "difference", operands)

        # -- amove between the two sets, the stores into either ----------------------------

        @rule(member=members, to_pool=st.booleans(), in_transaction=st.booleans())
        def amove(self, member: Any, to_pool: bool, in_transaction: bool) -> None:
            pairs = [(self.article.tags, self.model.tags), (self.pool.tags, self.pool_model.tags)]
            (source, source_model), (destination, destination_model) = (
                pairs if to_pool else pairs[::-1]
            )
            expected = member in source_model

            async def move() -> Any:
                if not in_transaction:
                    return await source.amove(member, destination)
                async with ledgerset.transaction() as tx:
                    assert await source.amove(member, destination) is None
                return tx.results[0]  # type: ignore[index]

            assert self.run(move()) is expected
            if expected:
                source_model.discard(member)
                destination_model.add(member)
            assert source == source_model and destination == destination_model  # the mirrors

        @rule(
            into_pool=st.booleans(),
            algebra=st.sampled_from(["union", "intersection", "difference"]),
            operands=st.lists(st.sampled_from(["pool", "itself"]), min_size=1, max_size=3),
            in_transaction=st.booleans(),
        )
        def astore(
            self, into_pool: bool, algebra: str, operands: list[str], in_transaction: bool
        ) -> None:
            sets = {"pool": self.pool.tags, "itself": self.article.tags}
            models = {"pool": self.pool_model.tags, "itself": self.model.tags}
            holder = self.pool_model if into_pool else self.model
            destination = sets["pool" if into_pool else "itself"]
            first, *others = (models[o] for o in operands)
            result = getattr(set(first), algebra)(*others)
            store = getattr(destination, f"astore_{algebra}")

            async def run_store() -> Any:
                if not in_transaction:
                    return await store(*(sets[o] for o in operands))
                async with ledgerset.transaction() as tx:
                    assert await store(*(sets[o] for o in operands)) is None
                return tx.results[0]  # type: ignore[index]

            assert self.run(run_store()) == len(result)
            holder.tags = result
            assert destination == result  # the mirror is the result

        # -- if_unchanged: refused exactly when a second instance wrote ---------------------

        @rule()
        def asave_if_unchanged(self) -> None:
            if self.stale:
                with pytest.raises(ConflictError):
                    self.run(self.article.asave(if_unchanged=True))
                self.run(self.article.aload())  # read again: the mirror is the server's
                self.stale = False
                assert self.article.tags == self.model.tags
            else:
                assert self.article.tags == self.model.tags  # not stale: the mirror is right
                self.run(self.article.asave(if_unchanged=True))

        def _check_algebra(self, method: str, python_method: str, operands: list[str]) -> None:
            sets = {"pool": self.pool.tags, "itself": self.article.tags}
            models = {"pool": self.pool_model.tags, "itself": self.model.tags}
            result = self.run(getattr(self.article.tags, method)(*(sets[o] for o in operands)))
            expected = getattr(self.model.tags, python_method)(*(models[o] for o in operands))
            assert result == expected
            assert all(type(member) is self.member_type for member in result), result

    Machine.__name__ = Machine.__qualname__ = name
    Machine.model_cls = model_cls
    Machine.pool_cls = pool_cls
    Machine.member_type = member_type
    Machine.stored = stored
    return Machine


StrSetMachine = _machine(
    "StrSetMachine", StatefulArticle, StatefulTagPool, STR_MEMBERS, str, STR_STORED
)
# For numbers the second set is another saved instance of the same model.
IntSetMachine = _machine(
    "IntSetMachine", StatefulIntTags, StatefulIntTags, INT_MEMBERS, int, INT_STORED
)
FloatSetMachine = _machine(
    "FloatSetMachine", StatefulFloatTags, StatefulFloatTags, FLOAT_MEMBERS, float, FLOAT_STORED
)


def test_a_redis_set_of_str_behaves_like_a_python_set(redis_url: str) -> None:
    run_state_machine_as_test(lambda: StrSetMachine(redis_url), settings=SETTINGS)


@pytest.mark.parametrize("machine", [IntSetMachine, FloatSetMachine], ids=["int", "float"])
def test_canonical_numbers_keep_python_set_semantics(
    redis_url: str, machine: type[_SetMachine]
) -> None:
    run_state_machine_as_test(lambda: machine(redis_url), settings=SETTINGS)
