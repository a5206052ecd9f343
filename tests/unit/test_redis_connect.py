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
