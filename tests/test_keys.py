"""``ledgerset.keys``: the single-server layout byte for byte, the cluster layout slot for slot.

The cluster layout is checked where it matters: on a real cluster, one script that writes a model
hash and its set is refused with the single-server layout (``CROSSSLOT``) and runs with the
cluster layout. ``key_slot`` is checked against the server's own ``CLUSTER KEYSLOT``.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from ledgerset.embedded import EmbeddedCluster, find_server_binary
from ledgerset.errors import InvalidKeyError
from ledgerset.keys import CLUSTER_SLOTS, KeyLayout, journal_stream, key_slot, slot_tag

SINGLE = KeyLayout()
CLUSTER = KeyLayout(cluster=True)

#: Writes a model's hash and one of its sets in one script, as the server program does.
WRITE_BOTH = "redis.call('HSET', KEYS[1], 'title', '\"x\"') return redis.call('SADD', KEYS[2], 'm')"


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    binary = os.environ.get("LEDGERSET_TEST_SERVER") or find_server_binary()
    with EmbeddedCluster(binary=binary) as running:
        yield running


@pytest.fixture
async def cluster_client(cluster: EmbeddedCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url)
    yield client
    await client.aclose()


# -- the single-server layout: the specification's, unchanged -------------------------------------


@pytest.mark.parametrize("pk", ["home", "{acme}:home", "a}b", "{}x", "}a{b"])
def test_single_server_layout_is_the_spec_byte_for_byte(pk: str) -> None:
    assert SINGLE.model_key("Page", pk) == f"Page:{pk}"
    assert SINGLE.set_key("Page", pk, "tags") == f"__rapyer_special__:Page:{pk}:tags"
    assert KeyLayout("other").set_key("Page", pk, "profile.badges") == (
        f"other:Page:{pk}:profile.badges"
    )


# -- the cluster layout ---------------------------------------------------------------------------


def test_cluster_layout_braces_the_model_key() -> None:
    assert CLUSTER.model_key("Page", "home") == "Page:home"  # the hash keeps its name
    assert CLUSTER.set_key("Page", "home", "tags") == "__rapyer_special__:{Page:home}:tags"
    assert key_slot("Page:home") == key_slot("__rapyer_special__:{Page:home}:tags") == 4213
    assert key_slot("__rapyer_special__:Page:home:tags") == 4638  # why: another slot
    assert KeyLayout("other", cluster=True).set_key("Page", "home", "tags") == (
        "other:{Page:home}:tags"
    )


def test_a_nested_set_field_path_is_laid_out_the_same() -> None:
    key = CLUSTER.set_key("User", "ann", "profile.badges")
    assert key == "__rapyer_special__:{User:ann}:profile.badges"
    assert key_slot(key) == key_slot("User:ann")
    assert CLUSTER.set_key("User", "{acme}:ann", "profile.badges") == (
        "__rapyer_special__:User:{acme}:ann:profile.badges"
    )


@pytest.mark.parametrize("pk", ["{acme}:home", "x}{acme}", "{acme}}", "{a{b}c"])
def test_a_pk_with_a_hash_tag_keeps_the_spec_layout(pk: str) -> None:
    key = CLUSTER.set_key("Page", pk, "tags")
    assert key == f"__rapyer_special__:Page:{pk}:tags"
    assert key_slot(key) == key_slot(f"Page:{pk}")


@pytest.mark.parametrize("pk", ["a{b", "{", "a{{b"])
def test_a_lone_open_brace_hashes_whole_and_is_braced(pk: str) -> None:
    key = CLUSTER.set_key("Page", pk, "tags")
    assert key == f"__rapyer_special__:{{Page:{pk}}}:tags"
    assert key_slot(key) == key_slot(f"Page:{pk}")


@pytest.mark.parametrize("pk", ["a}b", "}", "{}x", "}a{b", "x}y{"])
def test_a_pk_whose_braces_would_split_the_slot_is_refused(pk: str) -> None:
    with pytest.raises(InvalidKeyError) as refused:
        CLUSTER.set_key("Page", pk, "tags")
    error = refused.value
    assert (error.model, error.pk, error.field) == ("Page", pk, "tags")
    message = str(error)
    assert f"Page.tags (pk {pk!r})" in message
    assert "'{acme}:home'" in message  # the fix: a balanced hash tag
    assert f"slot {key_slot(f'Page:{pk}')}" in message
    assert f"slot {key_slot(error.key)}" in message


def test_a_prefix_with_a_brace_is_refused_naming_the_prefix() -> None:
    with pytest.raises(InvalidKeyError, match=r"prefix 'a\{b' has a brace.*special_prefix"):
        KeyLayout("a{b", cluster=True).set_key("Page", "home", "tags")


@given(pk=st.text(alphabet="ab{}:é", max_size=8), field=st.sampled_from(["tags", "p.badges"]))
def test_a_set_key_is_in_its_model_slot_or_refused(pk: str, field: str) -> None:
    try:
        key = CLUSTER.set_key("Page", pk, field)
    except InvalidKeyError as refused:
        assert refused.pk == pk
        return
    assert key_slot(key) == key_slot(CLUSTER.model_key("Page", pk))


# -- key_slot -------------------------------------------------------------------------------------


def test_key_slot_follows_the_cluster_spec() -> None:
    assert key_slot("123456789") == 0x31C3  # the spec's CRC16 check value
    assert key_slot(b"123456789") == 0x31C3
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot(b"foo{}{bar}")  # empty tag: whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot("é") == key_slot("é".encode())


async def test_key_slot_agrees_with_the_server(cluster: EmbeddedCluster) -> None:
    chooser = random.Random(14)
    alphabet = "ab{}:_ é🙂"
    keys: list[str | bytes] = [
        "".join(chooser.choice(alphabet) for _ in range(chooser.randrange(0, 12)))
        for _ in range(1500)
    ]
    keys += [chooser.randbytes(chooser.randrange(0, 16)) for _ in range(500)]
    keys += [b"{" + chooser.randbytes(3) + b"}" + chooser.randbytes(4) for _ in range(200)]
    client = Redis.from_url(cluster.url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("CLUSTER", "KEYSLOT", key)
            slots = await pipe.execute()
    finally:
        await client.aclose()
    mismatches = [
        (key, slot) for key, slot in zip(keys, slots, strict=True) if key_slot(key) != slot
    ]
    assert mismatches == []
    assert all(0 <= slot < CLUSTER_SLOTS for slot in slots)


def test_every_slot_has_a_short_tag_of_its_own() -> None:
    tags = [slot_tag(slot) for slot in range(CLUSTER_SLOTS)]
    assert [key_slot(tag) for tag in tags] == list(range(CLUSTER_SLOTS))
    assert all(1 <= len(tag) <= 3 and tag.isalnum() and tag.isascii() for tag in tags)
    # Fixed for good: existing journals on clusters are named with these.
    assert (slot_tag(0), slot_tag(4213), slot_tag(CLUSTER_SLOTS - 1)) == ("06S", "2Ib", "6ZJ")
    assert journal_stream("ledgerset:journal", 4213) == "ledgerset:journal:{2Ib}"
    assert key_slot(journal_stream("audit", 4213)) == 4213
    with pytest.raises(ValueError, match="0 to 16383"):
        slot_tag(CLUSTER_SLOTS)


# -- on a real cluster ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pk", "field"),
    [("home", "tags"), ("{acme}:home", "tags"), ("ann", "profile.badges"), ("a{b", "tags")],
)
async def test_one_script_writes_a_model_and_its_set_with_the_cluster_layout(
    cluster_client: RedisCluster, pk: str, field: str
) -> None:
    model_key = CLUSTER.model_key("Page", pk)
    set_key = CLUSTER.set_key("Page", pk, field)
    try:
        assert await cluster_client.eval(WRITE_BOTH, 2, model_key, set_key) == 1
        assert await cluster_client.hgetall(model_key) == {b"title": b'"x"'}
        assert await cluster_client.smembers(set_key) == {b"m"}
    finally:
        await cluster_client.delete(model_key, set_key)


async def test_the_single_server_layout_crosses_slots_on_a_cluster(
    cluster_client: RedisCluster,
) -> None:
    model_key = SINGLE.model_key("Page", "home")
    set_key = SINGLE.set_key("Page", "home", "tags")
    with pytest.raises(ResponseError, match="same slot"):
        await cluster_client.eval(WRITE_BOTH, 2, model_key, set_key)
    assert await cluster_client.exists(model_key, set_key) == 0
