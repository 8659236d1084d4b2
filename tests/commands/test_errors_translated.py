"""redis-py's errors, as ledgerset's, on the read side (``ledgerset._server_errors.translate``).

Against real servers: a read against a stopped server is a ``ServerUnavailableError`` naming
``host:port``; a read of a key another client overwrote with another type is a
``WrongTypeError`` naming the key (and changes nothing); a wrong password, at ``init`` and on a
read that has to reconnect, is its own ``ServerUnavailableError`` saying the server refused the
credentials, not that it cannot be reached; a read the ACL user may not run is a
``PermissionDeniedError`` naming the server command and the key.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import Field
from redis.asyncio import Redis
from support import Snapshot, server_binary

import ledgerset
from ledgerset import AtomicRedisModel, RedisSet
from ledgerset.embedded import EmbeddedServer
from ledgerset.errors import PermissionDeniedError, ServerUnavailableError, WrongTypeError


class TeArticle(AtomicRedisModel):
    title: str = "untitled"
    tags: RedisSet[str] = Field(default_factory=RedisSet)


#: Each read a model offers, by the name its errors give it.
READS: dict[str, Callable[[TeArticle], Awaitable[Any]]] = {
    "model.get": lambda article: TeArticle.aget(article.key),
    "model.exists": lambda article: TeArticle.aexists(article.key),
    "set.members": lambda article: article.tags.amembers(),
    "set.size": lambda article: article.tags.asize(),
}


@pytest.mark.parametrize("what", sorted(READS))
async def test_a_read_against_a_stopped_server_names_its_address(what: str) -> None:
    with EmbeddedServer(binary=server_binary()) as server:
        client = Redis.from_url(server.url, socket_connect_timeout=2)
        try:
            await ledgerset.init(redis=client)
            article = TeArticle(tags={"a"})
            await article.asave()
            server.stop()
            with pytest.raises(ServerUnavailableError) as caught:
                await READS[what](article)
        finally:
            await client.aclose()
            await ledgerset.aclose()
    assert caught.value.address == f"127.0.0.1:{server.port}"
    message = str(caught.value)
    assert f"{what}: cannot reach the Redis server at 127.0.0.1:{server.port}" in message
    assert "Nothing was changed." in message


@pytest.mark.parametrize("what", ["model.get", "set.members", "set.size"])
async def test_a_read_of_a_key_of_another_type_is_a_wrong_type_error(
    redis: Redis, snapshot: Callable[[], Awaitable[Snapshot]], what: str
) -> None:
    article = TeArticle(tags={"a"})
    await article.asave()
    set_key = article.tags._binding.key  # type: ignore[union-attr]
    await redis.delete(set_key)
    await redis.set(set_key, "another client's string")
    before = await snapshot()
    with pytest.raises(WrongTypeError) as caught:
        await READS[what](article)
    assert await snapshot() == before
    assert (caught.value.key, caught.value.actual) == (set_key, "string")
    assert (caught.value.model, caught.value.field, caught.value.command) == (
        "TeArticle",
        "tags",
        what,
    )
    assert "Delete or rename that key" in str(caught.value)


async def test_init_with_a_wrong_password_says_the_credentials_were_refused() -> None:
    password = secrets.token_hex(8)
    options = ["--requirepass", password]
    async with EmbeddedServer(binary=server_binary(), options=options) as server:
        wrong = f"redis://:not-{password}@127.0.0.1:{server.port}/0"
        with pytest.raises(ServerUnavailableError) as caught:
            await ledgerset.init(redis=wrong)
        with pytest.raises(ServerUnavailableError) as unauthenticated:
            await ledgerset.init(redis=f"redis://127.0.0.1:{server.port}/0")
    for error in (caught.value, unauthenticated.value):
        assert error.address == f"127.0.0.1:{server.port}"
        assert (
            f"ledgerset.init: the Redis server at 127.0.0.1:{server.port} refused the "
            "credentials" in str(error)
        )
        assert "cannot reach" not in str(error)
        assert password not in str(error)


async def test_a_read_that_reconnects_with_a_password_no_longer_valid_says_so() -> None:
    password = secrets.token_hex(8)
    options = ["--requirepass", password]
    async with EmbeddedServer(binary=server_binary(), options=options) as server:
        client = Redis.from_url(server.url)
        admin = Redis.from_url(server.url)
        try:
            await ledgerset.init(redis=client)
            article = TeArticle(tags={"a"})
            await article.asave()
            await admin.config_set("requirepass", f"new-{password}")
            await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # admin's too
            with pytest.raises(ServerUnavailableError) as caught:
                await article.tags.amembers()
        finally:
            await client.aclose()
            await admin.aclose()
            await ledgerset.aclose()
    assert f"set.members: the Redis server at 127.0.0.1:{server.port} refused the credentials" in (
        str(caught.value)
    )


async def test_a_read_the_acl_user_may_not_run_is_permission_denied(
    redis: Redis, redis_url: str, snapshot: Callable[[], Awaitable[Snapshot]]
) -> None:
    article = TeArticle(tags={"a"})
    await article.asave()
    user, password = f"te-reader-{secrets.token_hex(4)}", secrets.token_hex(8)
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-smembers"
    )
    host_port = redis_url.split("//", 1)[1]
    reader = Redis.from_url(f"redis://{user}:{password}@{host_port}")
    try:
        await ledgerset.init(redis=reader)
        before = await snapshot()
        with pytest.raises(PermissionDeniedError) as caught:
            await article.tags.amembers()
        assert await snapshot() == before
    finally:
        await reader.aclose()
        await redis.execute_command("ACL", "DELUSER", user)
    assert (caught.value.command, caught.value.server_command) == ("set.members", "SMEMBERS")
    assert caught.value.key == article.tags._binding.key  # type: ignore[union-attr]
    assert "ACL SETUSER" in str(caught.value)
