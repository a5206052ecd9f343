"""Every knob of the service, read once from the environment (prefix ``GRADSERVE_``, plus ``REDIS_URL``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_TENANT = "local"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="ignore", frozen=True)

    # None means "no Redis configured": `gradserve up` then starts an embedded one and exports its URL.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "GRADSERVE_REDIS_URL"))
    key_prefix: str = "gs"

    # "key1:tenant1,key2:tenant2". Empty means single-user mode, which is only safe on loopback.
    api_keys: str = ""

    # TTLs (seconds): everything the service writes expires unless touched again.
    network_ttl_s: int = 7 * 24 * 3600
    session_ttl_s: int = 24 * 3600
    job_ttl_s: int = 7 * 24 * 3600
    reply_ttl_s: int = 60

    # Where blobs go (checkpoints, uploaded datasets, exports): file:///dir, or s3://bucket/prefix with the
    # endpoint and keys below (any S3-compatible store; the keys are never echoed or logged). `gradserve up`
    # sets it to file://<its --data-dir>/artifacts when unset.
    artifacts_url: str = "file://.gradserve/artifacts"
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # A store that does not answer within this (connect, and retries of a request) is an outage: a 503.
    artifacts_timeout_s: float = Field(default=5.0, gt=0)
    # How often one worker deletes objects whose Redis record is gone (expired or deleted jobs and datasets),
    # and how old such an object must be: a record is written a moment after its object.
    artifacts_sweep_interval_s: int = Field(default=600, ge=1)
    artifacts_sweep_grace_s: int = Field(default=3600, ge=0)

    # Limits, enforced before anything is allocated.
    max_body_bytes: int = 32 * 1024 * 1024
    # Routes whose body is a network spec alone (POST /v1/networks as JSON, POST /v1/sessions): a
    # 256-layer spec is tens of KB.
    max_spec_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_layers: int = 256
    # Exported networks: each program's JSON, and its nodes (subgraphs' included).
    max_program_bytes: int = 16 * 1024 * 1024
    max_graph_nodes: int = 50_000
    max_parameters: int = 50_000_000
    max_activation_bytes: int = 2 * 1024**3
    # Opening a job at a step replays the steps since the nearest kept checkpoint on a session worker.
    max_replay_steps: int = 10_000
    max_tensor_elements: int = 1_000_000
    max_batch_size: int = 4096
    max_steps: int = 1_000_000
    max_concurrent_jobs: int = 4

    # Slow clients (launcher.guarded_http): a request's headers must arrive within header_timeout_s of
    # the connection (or the previous answer), its body within body_timeout_s of its headers; one client
    # address holds at most max_connections_per_client connections to one API process.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=120.0, gt=0)
    max_connections_per_client: int = Field(default=512, ge=1)

    # How long the API waits for a worker to answer a session call before giving up with a 504.
    call_timeout_s: float = 60.0
    # Seconds the API keeps an idle HTTP connection open. Well past any client pool's idle expiry
    # (httpx's: 5 s), so a client always drops an idle connection before the server does: at uvicorn's
    # 5 s default, a request sent as the server closed its connection got no answer (a ReadError).
    http_keep_alive_s: float = Field(default=75.0, gt=0)
    # Back-pressure on the sessions lane: calls waiting in a session queue beyond this many, or for a
    # worker longer than this, are answered 503 with Retry-After (and never run).
    session_queue_max: int = Field(default=1000, ge=1)
    session_queue_wait_s: float = Field(default=30.0, gt=0)
    # Exports and TensorBoard archives are made by a session worker: the most seconds one may take there (the
    # worker stops it at this deadline) before the API answers 504.
    export_timeout_s: float = Field(default=120.0, gt=0)
    # How long a session call's answer is kept for a retry with the same Idempotency-Key.
    session_call_record_ttl_s: int = Field(default=3600, ge=1)
    max_sessions: int = Field(default=100, ge=1)  # live sessions per tenant
    # Memory a session worker spends keeping sessions live between calls (each estimated as four copies
    # of its weights, plus buffers); beyond it the least recently used are rebuilt from Redis when called.
    session_cache_mb: int = Field(default=512, ge=0)
    # A worker is "alive" while its heartbeat key exists; it refreshes it every third of this.
    worker_heartbeat_ttl_s: int = 15
    # PyTorch intra-op threads per worker process; 0 keeps PyTorch's default (one per core). The
    # thread count can change the last bits of reductions, so exactness against a local run holds
    # for the same count: hence the default. Several workers on one box may trade it for less contention.
    worker_threads: int = Field(default=0, ge=0)

    # Jobs. A running job holds a lease renewed every third of its TTL; once it lapses (the worker
    # died), any worker's reaper re-enqueues the job, which resumes from its last checkpoint.
    job_lease_ttl_s: float = 6.0
    # A collective that waits longer than this fails the job (naming the rank) instead of holding it running.
    job_collective_timeout_s: float = Field(default=300.0, gt=0)
    # A job of many processes whose rank fails (killed, or stuck past the collective timeout) is restarted
    # whole from its last checkpoint this many times before it fails; a job's resources.max_restarts overrides.
    job_max_restarts: int = Field(default=2, ge=0)
    job_reaper_interval_s: float = 1.0
    job_max_records: int = 200_000  # metric records kept per job (older ones are trimmed)
    max_gradient_snapshots: int = 200
    max_capture_bytes: int = 512 * 1024**2  # all gradient snapshots of one job together
    max_dataset_bytes: int = 32 * 1024**2
    max_dataset_elements: int = 50_000_000  # a generated or uploaded dataset, inputs and targets together
    # The body of POST /v1/datasets, streamed to the artifact store in parts (never held whole): the file as sent.
    max_upload_bytes: int = 4 * 1024**3
    # Where the API spools a streamed upload to check it (the system's temporary directory when empty).
    upload_spool_dir: str = ""
    # Datasets by reference (models.data.sources): the directories a file:// URL may point under, separated by
    # commas; and per tenant, the S3 endpoint and keys its s3:// URLs are read with, as JSON
    # {"tenant": {"access_key_id": ..., "secret_access_key": ..., "endpoint": ..., "region": ...}}.
    data_dirs: str = ""
    data_credentials: SecretStr | None = None
    # Checkpoints kept per job: the last K, plus every one whose step is a multiple of M (0: none).
    checkpoint_keep_last: int = Field(default=10, ge=1)
    checkpoint_keep_every: int = Field(default=0, ge=0)
    # Sweeps: the sweeper holding the leader lease drives the active sweeps every sweep_poll_s; a lease not
    # renewed for sweep_lease_ttl_s (its process died) lets a standby sweeper take over.
    sweep_poll_s: float = Field(default=0.2, gt=0)
    sweep_lease_ttl_s: float = Field(default=5.0, gt=0)
    sweep_ttl_s: int = 7 * 24 * 3600

    # Faults and bounds. A queued job no worker has claimed this long after its message went out (or was
    # last seen maybe waiting in its queue), with its queue drained, is sent again: a worker killed
    # between taking a message and claiming the job loses it. A live worker claims within milliseconds,
    # and the lease makes a duplicate message harmless.
    job_requeue_after_s: float = Field(default=2.0, gt=0)
    # Everything a tenant stores (networks, datasets, jobs with their checkpoints and captures, counted
    # at their bound when submitted), checked before anything is written.
    tenant_storage_bytes: int = 4 * 1024**3
    # An Idempotency-Key's first answer is replayed to retries this long.
    idempotency_ttl_s: int = 24 * 3600
    # What 503 answers during a Redis outage ask clients to wait, in seconds.
    retry_after_s: int = 2
    # Pooled Redis connections idle this long are pinged before use, so one Redis restart does not
    # fail the next request on each stale connection.
    redis_health_check_interval_s: int = 10
    redis_connect_timeout_s: float = 2.0
    # Connections one process may hold: each session call in flight holds one while it waits for its
    # answer (redis-py's default of 100 turned the 101st concurrent call into an error).
    redis_max_connections: int = 1000

    @field_validator("api_keys")
    @classmethod
    def _keys_well_formed(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("data_credentials")
    @classmethod
    def _credentials_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        from models.data.credentials import parse_credentials  # its own module: settings stay import-light

        if value is not None:
            parse_credentials(value.get_secret_value())
        return value

    @property
    def tenants_by_key(self) -> dict[str, str]:
        return parse_api_keys(self.api_keys)

    @property
    def single_user(self) -> bool:
        return not self.tenants_by_key


def parse_api_keys(value: str) -> dict[str, str]:
    """Parse ``key:tenant`` pairs separated by commas; a bare key maps to a tenant of the same name."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, _, tenant = item.partition(":")
        key, tenant = key.strip(), (tenant.strip() or key.strip())
        if not key:
            raise ValueError(f"empty API key in {item!r}")
        out[key] = tenant
    return out


@lru_cache
def get_settings() -> Settings:
    return Settings()
