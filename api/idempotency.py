"""``Idempotency-Key`` on POST: a retried request gets the first answer instead of doing the work twice.

A generic ASGI layer in front of every non-session POST (session calls carry their own call ids). Per
(tenant, key) it keeps, in Redis, a fingerprint of the first request (method, path, query, content
type, body) and, once answered, its status, type and body. A retry with the same body gets that
answer again (``Idempotent-Replayed: true``); one with a different body is a 422; one that arrives
while the first is still running is a 409 with Retry-After. Answers that say "try again" (429, 5xx)
are not kept, so their retry runs afresh, and so does a retry whose answer named an object (a network,
dataset, job or sweep) that has since been deleted: replaying its id would hand out an id that is a 404.
"""

from __future__ import annotations

import base64
import hashlib

import orjson
from fastapi.responses import JSONResponse, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import tenant_for
from api.outages import outage_response
from models.errors import Unauthorized
from models.settings import Settings
from models.store.keys import Keys

HEADER = "idempotency-key"
MAX_KEY_CHARS = 255
# Bodies above this are not kept (POST answers are small JSON; a key still guards against a second run).
MAX_KEPT_BYTES = 1024 * 1024
# A first request still running after this is presumed dead (its API process was killed) and may be retried.
PENDING_TTL_S = 300
NOT_KEPT = frozenset({408, 429})
EXCLUDED_PREFIX = "/v1/sessions"
# Takes the kept answer back only if it is still the one read (another retry may have taken it first).
_RECLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class Idempotency:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        raw_key = headers.get(HEADER.encode())
        if raw_key is None or scope["method"] != "POST" or scope["path"].startswith(EXCLUDED_PREFIX):
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
            problem = f"the Idempotency-Key header must be 1 to {MAX_KEY_CHARS} printable characters"
            await _json(422, {"detail": [{"loc": ["header", HEADER], "msg": problem, "type": "invalid_input"}]})(
                scope, receive, send
            )
            return
        tenant = self._tenant(headers)
        if tenant is None:  # no valid API key: the route answers 401, and nothing is kept
            await self.app(scope, receive, send)
            return
        body, more, size = [], True, 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body.append(message.get("body", b""))
            size += len(body[-1])
            more = message.get("more_body", False)
            if size > self.settings.max_body_bytes:
                # Only a streamed dataset upload (its own, larger cap) gets here: a keyed body is held whole to
                # compare retries, so it keeps the general cap.
                limit = self.settings.max_body_bytes
                problem = (
                    f"a request with an {HEADER} is held whole to compare retries: its body is limited to "
                    f"{limit:,} bytes (GRADSERVE_MAX_BODY_BYTES); send a larger dataset without the header"
                )
                await _json(413, {"detail": problem})(scope, receive, send)
                return
        payload = b"".join(body)
        fingerprint = _fingerprint(scope, headers, payload)
        redis: Redis = scope["app"].state.redis
        slot = self.keys.idempotency(tenant, hashlib.sha256(key.encode()).hexdigest())
        try:
            first = await self._claim(redis, slot, fingerprint)
        except RedisError as exc:
            await _outage(exc, self.settings)(scope, receive, send)
            return
        if first is not None:
            await self._answer_retry(first, fingerprint)(scope, receive, send)
            return
        await self._run_and_keep(scope, payload, send, redis, slot, fingerprint, tenant)

    def _tenant(self, headers: dict[bytes, bytes]) -> str | None:
        try:
            return tenant_for(headers.get(b"authorization", b"").decode("latin-1"), self.settings)
        except Unauthorized:
            return None

    async def _claim(self, redis: Redis, slot: str, fingerprint: str) -> dict[str, object] | None:
        """None when this request is the first with its key (now marked pending); else what was kept."""
        pending = orjson.dumps({"state": "pending", "fp": fingerprint})
        if await redis.set(slot, pending, nx=True, ex=PENDING_TTL_S):
            return None
        raw = await redis.get(slot)
        if raw is None:  # expired between the two calls: claim again
            return await self._claim(redis, slot, fingerprint)
        kept: dict[str, object] = orjson.loads(raw)
        made = kept.get("made")
        if kept.get("fp") == fingerprint and isinstance(made, str) and not await redis.exists(made):
            if await redis.eval(_RECLAIM, 1, slot, raw, pending, PENDING_TTL_S):
                return None  # what it made was deleted: this retry makes it anew
            return await self._claim(redis, slot, fingerprint)
        return kept

    def _answer_retry(self, first: dict[str, object], fingerprint: str) -> Response:
        if first["fp"] != fingerprint:
            msg = (
                "this Idempotency-Key was already used for a different request (another body or path); "
                "use a new key for a new request"
            )
            return _json(422, {"detail": [{"loc": ["header", HEADER], "msg": msg, "type": "invalid_input"}]})
        if first["state"] == "pending":
            return _json(
                409,
                {"detail": "the first request with this Idempotency-Key is still running; retry shortly"},
                {"Retry-After": "1"},
            )
        return Response(
            base64.b64decode(str(first["body"])),
            status_code=int(str(first["status"])),
            media_type=str(first["media"]),
            headers={"Idempotent-Replayed": "true"},
        )

    async def _run_and_keep(
        self, scope: Scope, payload: bytes, send: Send, redis: Redis, slot: str, fingerprint: str, tenant: str
    ) -> None:
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:  # the app reads past the body only to wait for a disconnect
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}

        status, media, chunks = 500, "application/json", []

        async def capture(message: Message) -> None:
            nonlocal status, media
            if message["type"] == "http.response.start":
                status = message["status"]
                media = dict(message.get("headers") or []).get(b"content-type", b"application/json").decode()
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            body = b"".join(chunks)
            keep = status < 500 and status not in NOT_KEPT and len(body) <= MAX_KEPT_BYTES
            try:
                if keep:
                    doc = {"state": "done", "fp": fingerprint, "status": status, "media": media}
                    doc["body"] = base64.b64encode(body).decode("ascii")
                    made = self._made(tenant, status, body)
                    if made is not None:
                        doc["made"] = made
                    await redis.set(slot, orjson.dumps(doc), ex=self.settings.idempotency_ttl_s)
                else:
                    await redis.delete(slot)
            except RedisError:
                pass  # the answer went out; the pending mark lapses after PENDING_TTL_S

    def _made(self, tenant: str, status: int, body: bytes) -> str | None:
        """The Redis key of the object a 201 or 202 answer created, by its id's prefix; None for others."""
        if status not in (201, 202):
            return None
        try:
            made = orjson.loads(body).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        kinds = {"net_": self.keys.network, "data_": self.keys.dataset, "job_": self.keys.job, "swp_": self.keys.sweep}
        for prefix, key in kinds.items():
            if isinstance(made, str) and made.startswith(prefix):
                return key(tenant, made)
        return None


def _fingerprint(scope: Scope, headers: dict[bytes, bytes], payload: bytes) -> str:
    digest = hashlib.sha256()
    for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1")):
        digest.update(part.encode() + b"\0")
    digest.update(headers.get(b"content-type", b"") + b"\0")
    digest.update(payload)
    return digest.hexdigest()


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _outage(exc: RedisError, settings: Settings) -> Response:
    # Not an outage (a full Redis, a refused script): still a 503 a client may retry, so it says when.
    retry = {"Retry-After": str(settings.retry_after_s)}
    return outage_response(exc, settings.retry_after_s) or _json(503, {"detail": f"Redis error: {exc}"}, retry)
