"""Every Redis key the service uses. Nothing else spells a key.

Keys are ``{prefix}:{tenant}:...`` for tenant data, so another tenant's id simply does not exist,
and ``{prefix}:sys:...`` for the service's own bookkeeping (workers, replies).
"""

from __future__ import annotations

from dataclasses import dataclass


class JobPart:
    """The ``part`` of ``Keys.job_part``: a job's satellite keys, all expiring with the job."""

    EVENTS = "events"  # stream: every metric record and state change; entry ids are the SSE ids
    LEASE = "lease"  # the running worker's token, renewed while it runs
    CANCEL = "cancel"  # flag the running worker polls
    RESUME = "resume"  # JSON: the record (models.store.artifacts.ArtifactRef) of the state the job resumes from
    GRADS = "grads"  # hash: step -> gradients (safetensors)
    GRAD_STATS = "gradstats"  # hash: step -> per-parameter statistics (JSON)
    GRAPH = "graph"  # the autograd graph of the first step (JSON)
    DATA = "data"  # hash: an inline dataset, field "data" (safetensors), like an uploaded one
    # hash: step -> JSON {step, epoch, time, bytes, key, sha256} of each kept checkpoint; its full training
    # state (weights + optimizer + RNG + data order, safetensors) is the artifact ``key``
    CHECKPOINT_INDEX = "ckptindex"
    EXPORTS = "exports"  # hash: "{format}:{step}" -> the record of an exported model file, made on first request
    INIT = "init"  # hash: an exported network's programs and initial weights, copied from it at submit
    PRUNE = "prune"  # flag set with CANCEL by a sweep's pruner: the job then ends "pruned", not "cancelled"
    ACTIVATIONS = "acts"  # hash: JSON [step, layers, format, bins] -> a replayed step's activations answer


def job_parts() -> list[str]:
    """Every ``JobPart``: what deleting a job deletes."""
    return [value for name, value in vars(JobPart).items() if name.isupper() and isinstance(value, str)]


@dataclass(frozen=True)
class Keys:
    prefix: str = "gs"

    # --- tenant data ---
    def network(self, tenant: str, network_id: str) -> str:
        return f"{self.prefix}:{tenant}:net:{network_id}"

    def network_blobs(self, tenant: str, network_id: str) -> str:
        """Hash of an exported network: ``train_program``, ``eval_program`` (checked JSON), ``weights``."""
        return f"{self.prefix}:{tenant}:net:{network_id}:blobs"

    def session(self, tenant: str, session_id: str) -> str:
        """Hash: meta (JSON), version, and one field per state part (safetensors bytes)."""
        return f"{self.prefix}:{tenant}:sess:{session_id}"

    def session_lock(self, tenant: str, session_id: str) -> str:
        return f"{self.prefix}:{tenant}:sess:{session_id}:lock"

    def session_call(self, tenant: str, session_id: str, call_id: str) -> str:
        """Hash: a call applied to the session (``op``, ``version`` after it, ``frame``: its answer), so a
        retry with the same call id (``Idempotency-Key``) gets that answer instead of applying it again."""
        return f"{self.prefix}:{tenant}:sess:{session_id}:call:{call_id}"

    def sessions_index(self, tenant: str) -> str:
        """Set of the tenant's session ids, for the sessions-per-tenant quota (pruned as sessions expire)."""
        return f"{self.prefix}:{tenant}:sessions"

    def job(self, tenant: str, job_id: str) -> str:
        return f"{self.prefix}:{tenant}:job:{job_id}"

    def job_index(self, tenant: str) -> str:
        """Sorted set of the tenant's job ids, scored by creation time."""
        return f"{self.prefix}:{tenant}:jobs"

    def job_part(self, tenant: str, job_id: str, part: str) -> str:
        """A job's satellite data: metrics, events, gradients, checkpoint, graph, lease, cancel."""
        return f"{self.prefix}:{tenant}:job:{job_id}:{part}"

    def dataset(self, tenant: str, dataset_id: str) -> str:
        """Hash: ``meta`` (JSON: shapes, dtypes, sizes) and ``ref`` (the record of its safetensors file in the
        artifact store)."""
        return f"{self.prefix}:{tenant}:data:{dataset_id}"

    def pattern(self, tenant: str, kind: str) -> str:
        """SCAN pattern of a tenant's objects of one kind ("net", "sess", "data"); it also matches their
        satellite keys (``...:lock``), which have a further ``:``."""
        return f"{self.prefix}:{tenant}:{kind}:*"

    def jobs_active(self, tenant: str) -> str:
        """Set of the tenant's queued or running job ids, for the concurrent-jobs limit."""
        return f"{self.prefix}:{tenant}:jobs:active"

    def usage(self, tenant: str, kind: str) -> str:
        """Sorted set: the Redis key of each object of one kind the tenant stores, scored by its bytes."""
        return f"{self.prefix}:{tenant}:usage:{kind}"

    def idempotency(self, tenant: str, key_digest: str) -> str:
        """JSON: a POST's first answer under one Idempotency-Key (by its SHA-256), replayed to retries."""
        return f"{self.prefix}:{tenant}:idem:{key_digest}"

    def sweep(self, tenant: str, sweep_id: str) -> str:
        """Hash: the sweep's request, status, times, importances (JSON where structured)."""
        return f"{self.prefix}:{tenant}:sweep:{sweep_id}"

    def sweep_trials(self, tenant: str, sweep_id: str) -> str:
        """Hash: trial number -> JSON {number, job_id, params, state, value, reported_epoch}."""
        return f"{self.prefix}:{tenant}:sweep:{sweep_id}:trials"

    def sweep_index(self, tenant: str) -> str:
        """Sorted set of the tenant's sweep ids, scored by creation time."""
        return f"{self.prefix}:{tenant}:sweeps"

    # --- service bookkeeping ---
    def sweeps_active(self) -> str:
        """Set of ``tenant/sweep_id`` of sweeps that still need driving (by the sweeper)."""
        return f"{self.prefix}:sys:sweeps:active"

    def sweep_lease(self, member: str) -> str:
        """The token of the sweeper driving sweep ``tenant/sweep_id``; it lapses when that process dies."""
        return f"{self.prefix}:sys:sweeps:lease:{member}"

    def sweeper_leader(self) -> str:
        """The lease of the sweeper process that drives the sweeps (``gradserve sweeper``): its identity as
        JSON {host, pid, token}; standbys wait for it to lapse."""
        return f"{self.prefix}:sys:sweeper:leader"

    def optuna_journal(self) -> str:
        """Prefix of Optuna's JournalRedisBackend: it writes ``{this}:log_number``, ``{this}:log:{n}`` and
        ``{this}:snapshot``. One journal holds every sweep's study (named ``tenant/sweep_id``)."""
        return f"{self.prefix}:sys:optuna"

    def artifact_sweep(self) -> str:
        """Held by the worker sweeping the artifact store this interval (models.store.artifact_sweep): one at a time."""
        return f"{self.prefix}:sys:artifacts:sweep"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:sys:worker:{name}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:sys:worker:*"

    def jobs_running(self) -> str:
        """Set of ``tenant/job_id`` of started jobs; reapers re-enqueue those whose lease lapsed."""
        return f"{self.prefix}:sys:jobs:running"

    def jobs_queued(self) -> str:
        """Sorted set of ``tenant/job_id`` of queued jobs, scored by when their message was last sent."""
        return f"{self.prefix}:sys:jobs:queued"

    def celery_prefix(self) -> str:
        """Prefix of every key of Celery's Redis transport (its queues, ``unacked``, bindings)."""
        return f"{self.prefix}:celery:"

    def reply(self, call_id: str) -> str:
        """List a worker pushes one answer onto; the API blocks on it with BLPOP."""
        return f"{self.prefix}:sys:reply:{call_id}"

    def call_claim(self, attempt: str) -> str:
        """Who took one attempt of a session call: the worker's name, or ``abandoned`` once the API gave up
        on it (whoever sets it first wins, so an attempt the API answered is never applied later)."""
        return f"{self.prefix}:sys:call:{attempt}:claim"

    def call_blob(self, call_id: str, name: str) -> str:
        """A session call's large argument (a tensor, an uploaded state), kept out of the broker."""
        return f"{self.prefix}:sys:call:{call_id}:{name}"
