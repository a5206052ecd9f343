"""Redis URLs in logs carry no password; pooled connections outlive a Redis restart."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import redis
from redis.asyncio import Redis as AsyncRedis

from launcher.embedded_redis import start_redis
from models.settings import Settings
from models.store.connect import redacted, redis_options


def test_redacted_hides_the_password_only() -> None:
    assert redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted("rediss://app:s3cret@10.0.0.5:6380/1") == "rediss://app:***@10.0.0.5:6380/1"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in redacted("redis://u:s3cret@[::1]:6379/0")


def test_redacted_hides_every_form_of_the_password() -> None:
    """redis-py takes the password from the query too (``?password=``), and a unix socket's only from
    there: `gradserve up` printed those in clear."""
    assert redacted("redis://127.0.0.1:8301/0?password=s3cret") == "redis://127.0.0.1:8301/0?password=***"
    assert (
        redacted("rediss://redis.example:6380/0?username=app&password=s3cret&ssl_cert_reqs=required")
        == "rediss://redis.example:6380/0?username=app&password=***&ssl_cert_reqs=required"
    )
    assert redacted("unix:///run/redis.sock?db=2&password=s3cret") == "unix:///run/redis.sock?db=2&password=***"
    assert redacted("unix://:s3cret@/run/redis.sock?db=2") == "unix://:***@/run/redis.sock?db=2"
    assert redacted("redis://app:s3cret@redis:6379/0?password=other") == "redis://app:***@redis:6379/0?password=***"
    # Percent-encoded, upper-case key, and a password holding '@' or '&' once decoded.
    for url in (
        "redis://redis:6379/0?PASSWORD=s3cret",
        "redis://redis:6379/0?pass%77ord=s3cret",
        "redis://:s3%40cret@redis:6379/0",
        "redis://redis:6379/0?password=s3%26cret&db=1",
    ):
        assert "s3" not in redacted(url), url
    # A user part alone is masked too: a password put there by mistake would otherwise show.
    assert redacted("redis://s3cret@redis:6379/0") == "redis://***@redis:6379/0"


def _restart(proc: subprocess.Popen, data_dir: Path, url: str) -> subprocess.Popen:
    proc.kill()
    proc.wait()
    new, _ = start_redis(data_dir, port=int(url.rsplit(":", 1)[1].split("/")[0]))
    return new


def test_pooled_connections_survive_a_redis_restart(tmp_path: Path) -> None:
    """Every connection pooled before a restart points at the dead server: the pool must reconnect it
    before use, not fail the first command on each (a 503 after Redis was back, in the fault suite)."""
    proc, url = start_redis(tmp_path)
    try:
        options = redis_options(Settings(redis_url=url))

        async def run_async() -> None:
            client = AsyncRedis.from_url(url, **options)
            pool = client.connection_pool
            held = [await pool.get_connection() for _ in range(8)]
            for conn in held:
                await pool.release(conn)
            nonlocal proc
            proc = _restart(proc, tmp_path, url)
            await asyncio.sleep(0.2)  # the service's event loop runs on while Redis restarts: it sees the EOFs
            # At once, so each command takes a different pooled (stale) connection.
            assert await asyncio.gather(*(client.set(f"k{i}", i) for i in range(8))) == [True] * 8
            await client.aclose()

        asyncio.run(run_async())

        client = redis.Redis.from_url(url, **options)
        held_sync = [client.connection_pool.get_connection() for _ in range(3)]
        for conn in held_sync:
            client.connection_pool.release(conn)
        proc = _restart(proc, tmp_path, url)
        assert [client.get(f"k{i}") for i in range(8)] == [str(i).encode() for i in range(8)]
        client.close()
    finally:
        proc.kill()
        proc.wait()
