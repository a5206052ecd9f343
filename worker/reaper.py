"""Re-enqueue jobs whose worker died: their lease lapsed while their status still says running, or
their message was lost before any worker claimed them.

The broker would redeliver such a job's message only after its visibility timeout (an hour), so
every worker runs this light loop. The check-and-requeue is one Lua script, so of all the reapers
that see an orphan only one re-enqueues it; the new run resumes from the job's last checkpoint.

A worker killed between taking a message off its queue and claiming the job (a window kombu does not
close: the message is neither in the queue nor in ``unacked`` afterwards) loses the job outright. The
window is wider than it looks: a SIGKILLed worker tears down its memory before the kernel closes its
sockets, and meanwhile Redis hands the next message to its pending BRPOP. So a job still ``queued``
``GRADSERVE_JOB_REQUEUE_AFTER_S`` after its message was sent, or last seen maybe waiting in its queue,
with no lease and its queue drained, is sent again. A live worker claims the lease within milliseconds
of taking the message, so the bound can be short; and a duplicate message is harmless: a run claims the
job's lease before it starts, and a job that ended is not run again.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from models.settings import Settings
from models.store.artifact_sweep import sweep_once
from models.store.artifacts import ArtifactUnavailable, shared_artifacts
from models.store.keys import JobPart, Keys
from models.store.replies import members, opt_text, text
from models.tasks import JOB_RUN, QUEUE_CPU, broker_queue_key

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
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
local event = cjson.encode({status = 'queued', reason = 'worker lost (its lease lapsed)', resume_from = from})
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'type', 'state', 'data', event)
return 'requeue'
"""

# KEYS: job, lease, queued set, the queue's broker list. ARGV: member, cutoff (sent before it: lost), now.
# The score is when the message was sent, or last seen possibly waiting in its queue: a job queued
# behind others for an hour is resent only once its queue has stood empty, unclaimed, past the cutoff.
_RESEND = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' then redis.call('ZREM', KEYS[3], ARGV[1]) return 'gone' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'leased' end
local sent = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not sent or tonumber(sent) > tonumber(ARGV[2]) then return 'fresh' end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
if redis.call('LLEN', KEYS[4]) > 0 then return 'waiting' end
return redis.call('HINCRBY', KEYS[1], 'resent', 1)
"""


def reap_once(client: redis.Redis, keys: Keys, settings: Settings, app: Celery) -> list[str]:
    """One pass: re-enqueue every orphaned job; return their ids."""
    reap = client.register_script(_REAP)
    requeued = []
    for raw in client.smembers(keys.jobs_running()):
        member = text(raw)
        tenant, _, job_id = member.rpartition("/")
        job_key = keys.job(tenant, job_id)
        script_keys = [
            job_key,
            keys.job_part(tenant, job_id, JobPart.LEASE),
            keys.jobs_running(),
            keys.job_part(tenant, job_id, JobPart.EVENTS),
        ]
        script_keys.append(keys.jobs_queued())
        if reap(keys=script_keys, args=[member, settings.job_max_records, time.time()]) != b"requeue":
            continue
        queue = opt_text(client.hget(job_key, "queue")) or QUEUE_CPU
        app.send_task(JOB_RUN, args=[tenant, job_id], queue=queue)
        log.warning("job %s lost its worker; re-enqueued on %s to resume from its checkpoint", job_id, queue)
        requeued.append(job_id)
    return requeued + resend_lost(client, keys, settings, app)


def resend_lost(client: redis.Redis, keys: Keys, settings: Settings, app: Celery) -> list[str]:
    """Send again every queued job whose message went out long ago and that nobody claimed."""
    resend = client.register_script(_RESEND)
    now = time.time()
    cutoff = now - settings.job_requeue_after_s
    resent = []
    for member in members(client.zrangebyscore(keys.jobs_queued(), "-inf", cutoff)):
        tenant, _, job_id = member.rpartition("/")
        job_key = keys.job(tenant, job_id)
        queue = opt_text(client.hget(job_key, "queue")) or QUEUE_CPU
        lease = keys.job_part(tenant, job_id, JobPart.LEASE)
        script_keys = [job_key, lease, keys.jobs_queued(), broker_queue_key(settings, queue)]
        count = resend(keys=script_keys, args=[member, cutoff, now])
        if not isinstance(count, int):
            continue
        app.send_task(JOB_RUN, args=[tenant, job_id], queue=queue, task_id=f"{job_id}-resent-{count}")
        log.warning("job %s was never claimed (its message was lost); sent again on %s", job_id, queue)
        resent.append(job_id)
    return resent


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
                self._sweep()
            except (redis.ConnectionError, redis.TimeoutError) as exc:  # an outage: one line, not a trace
                log.warning("reaper pass skipped, Redis unreachable: %s", exc)
            except ArtifactUnavailable as exc:
                log.warning("artifact sweep skipped: %s", exc.msg)
            except Exception:  # a failed pass must not end the loop; the next one retries
                log.exception("reaper pass failed")

    def _sweep(self) -> None:
        """Objects whose records expired or were deleted, by one worker per interval."""
        interval = self.settings.artifacts_sweep_interval_s
        if self.client.set(self.keys.artifact_sweep(), "1", nx=True, ex=interval):
            artifacts = shared_artifacts(self.settings)
            gone = sweep_once(self.client, self.keys, artifacts, grace_s=self.settings.artifacts_sweep_grace_s)
            if gone:
                log.info("artifact sweep deleted %d objects whose records are gone", len(gone))


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
