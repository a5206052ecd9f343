"""A session lock whose release was lost with Redis, released once Redis answers again.

A call's state, lock release and reply go out in one MULTI/EXEC. When Redis is gone at that moment
(killed, restarting from its AOF), the call dies with it, but its lock, persisted, would outlive it
until its TTL (the call's deadline, a minute), and every retry would be a 503 "busy with another call"
while the lock's holder, this live worker, never releases it. The holder knows, so it retries the release
itself, as often as a heartbeat retries, until Redis answers or the lock has lapsed on its own.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from models.store.keys import Keys
from worker.heartbeat import RETRY_S

log = logging.getLogger("gradserve.sessions")
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def release_when_back(client: redis.Redis, keys: Keys, tenant: str, sid: str, token: str, until: float) -> None:
    """Release ``token``'s hold on the session's lock from a daemon thread, retrying until ``until``
    (wall-clock seconds, when the lock expires anyway)."""
    log.warning("session %s: its lock's release was lost with Redis; releasing it once Redis answers", sid)
    lock = keys.session_lock(tenant, sid)

    def run() -> None:
        while time.time() < until:
            try:
                client.eval(RELEASE, 1, lock, token)
                return
            except redis.RedisError:
                time.sleep(RETRY_S)

    threading.Thread(target=run, name=f"gradserve-release-{sid}", daemon=True).start()
