"""Re-enqueue jobs whose worker died: their lease lapsed while their status still says running.

The broker would redeliver such a job's message only after its visibility timeout (an hour), so
every worker runs this light loop. The check-and-requeue is one Lua script, so of all the reapers
that see an orphan only one re-enqueues it; the new run resumes from the job's last checkpoint.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from models.settings import Settings
from models.store.keys import JobPart, Keys
from models.tasks import JOB_RUN, QUEUE_CPU

log = logging.getLogger(__name__)

_REAP = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then redis.call('SREM', KEYS[3], ARGV[1]) return 'gone' end
if status ~= 'running' then redis.call('SREM', KEYS[3], ARGV[1]) return status end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'alive' end
local from = tonumber(redis.call('HGET', KEYS[1], 'checkpoint_step') or '0')
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('SREM', KEYS[3], ARGV[1])
local event = cjson.encode({status = 'queued', reason = 'worker lost (its lease lapsed)', resume_from = from})
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'type', 'state', 'data', event)
return 'requeue'
"""


def reap_once(client: redis.Redis, keys: Keys, settings: Settings, app: Celery) -> list[str]:
    """One pass: re-enqueue every orphaned job; return their ids."""
    reap = client.register_script(_REAP)
    requeued = []
    for raw in client.smembers(keys.jobs_running()):
        member = raw.decode()
        tenant, _, job_id = member.rpartition("/")
        job_key = keys.job(tenant, job_id)
        script_keys = [
            job_key,
            keys.job_part(tenant, job_id, JobPart.LEASE),
            keys.jobs_running(),
            keys.job_part(tenant, job_id, JobPart.EVENTS),
        ]
        if reap(keys=script_keys, args=[member, settings.job_max_records]) != b"requeue":
            continue
        queue = (client.hget(job_key, "queue") or QUEUE_CPU.encode()).decode()
        app.send_task(JOB_RUN, args=[tenant, job_id], queue=queue)
        log.warning("job %s lost its worker; re-enqueued on %s to resume from its checkpoint", job_id, queue)
        requeued.append(job_id)
    return requeued


class Reaper:
    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings, app: Celery) -> None:
        self.client, self.keys, self.settings, self.app = client, keys, settings, app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradserve-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.job_reaper_interval_s):
            try:
                reap_once(self.client, self.keys, self.settings, self.app)
            except Exception:  # a failed pass must not end the loop; the next one retries
                log.exception("reaper pass failed")


_reaper: Reaper | None = None


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    global _reaper
    from worker.celery_app import app, keys, redis_client, settings

    _reaper = Reaper(redis_client(), keys, settings, app)
    _reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_: object) -> None:
    if _reaper is not None:
        _reaper.stop()
