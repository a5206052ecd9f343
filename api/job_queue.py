"""A queued job's place in line: where its Celery message sits in its queue's Redis list.

Kombu's Redis transport LPUSHes messages and its consumers BRPOP them, so the next job to start is
at the list's tail; a message's place is its distance from there. The list is read only for jobs
that are still queued, up to ``MAX_SCANNED`` messages (beyond that the place is not told).
"""

from __future__ import annotations

from redis.asyncio import Redis

MAX_SCANNED = 10_000


async def place_in_line(redis: Redis, queue_key: str, job_id: str) -> int | None:
    """1 for the next job a free worker takes; None when its message is not waiting in the queue.

    ``queue_key`` is the queue's Redis list (``models.tasks.broker_queue_key``), not its name.
    """
    messages = await redis.lrange(queue_key, -MAX_SCANNED, -1)
    needle = f'"{job_id}-'.encode()  # task ids are "<job id>-<attempt>"
    for index, message in enumerate(messages):
        if needle in message:
            return len(messages) - index
    return None
