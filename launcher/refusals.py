"""What ``gradserve api`` and ``gradserve up`` refuse before they start anything: an open listener without
API keys, and a port already taken."""

from __future__ import annotations

import errno
import socket

from models.settings import get_settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def refuse_open_single_user(host: str) -> str | None:
    """Single-user mode has no authentication, so it must not listen beyond loopback."""
    if get_settings().single_user and host not in LOOPBACK:
        return (
            f"refusing to listen on {host} without API keys: set GRADSERVE_API_KEYS='key:tenant,...' "
            "or listen on 127.0.0.1"
        )
    return None


def refuse_taken_port(host: str, port: int) -> str | None:
    """Whether the API could listen on ``host:port``, asked before anything starts.

    Otherwise `up` started Redis and the workers, the API failed to bind, and the stack gave up only
    when readiness never came. The probe binds as uvicorn does (SO_REUSEADDR, so a port a previous run
    left in TIME_WAIT counts as free, as it is to uvicorn).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another gradserve up?); choose another with --port"
            return f"cannot listen on {host} port {port}: {exc.strerror}"
    return None
