"""Every Redis key the service uses. Nothing else spells a key.

Keys are ``{prefix}:{tenant}:...`` for tenant data, so another tenant's id simply does not exist,
and ``{prefix}:sys:...`` for the service's own bookkeeping (workers, replies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "gs"

    # --- tenant data ---
    def network(self, tenant: str, network_id: str) -> str:
        return f"{self.prefix}:{tenant}:net:{network_id}"

    def session(self, tenant: str, session_id: str) -> str:
        """Hash: meta (JSON), version, and one field per state part (safetensors bytes)."""
        return f"{self.prefix}:{tenant}:sess:{session_id}"

    def session_lock(self, tenant: str, session_id: str) -> str:
        return f"{self.prefix}:{tenant}:sess:{session_id}:lock"

    def job(self, tenant: str, job_id: str) -> str:
        return f"{self.prefix}:{tenant}:job:{job_id}"

    def job_index(self, tenant: str) -> str:
        """Sorted set of the tenant's job ids, scored by creation time."""
        return f"{self.prefix}:{tenant}:jobs"

    def job_part(self, tenant: str, job_id: str, part: str) -> str:
        """A job's satellite data: metrics, events, gradients, checkpoint, graph, lease, cancel."""
        return f"{self.prefix}:{tenant}:job:{job_id}:{part}"

    def dataset(self, tenant: str, dataset_id: str) -> str:
        return f"{self.prefix}:{tenant}:data:{dataset_id}"

    # --- service bookkeeping ---
    def worker(self, name: str) -> str:
        return f"{self.prefix}:sys:worker:{name}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:sys:worker:*"

    def reply(self, call_id: str) -> str:
        """List a worker pushes one answer onto; the API blocks on it with BLPOP."""
        return f"{self.prefix}:sys:reply:{call_id}"
