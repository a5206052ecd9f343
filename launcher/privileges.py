"""Running as root: said once, in the launcher's words, instead of Celery's warning in every worker.

The image runs as an ordinary user (uid 10001, see the Dockerfile), where none of this applies. Run as
root (a container started with --user root, a laptop's sudo), Celery printed its multi-line superuser
``SecurityWarning`` at every worker start, once per worker. The warning is about pickle, which the
service never accepts (``accept_content`` is JSON only), so what is left to say is that the workers,
which run what clients send, have root's rights.
"""

from __future__ import annotations

import os
import warnings

# Set by `gradserve up` in its children's environment once it has said so itself.
NOTED_ENV = "GRADSERVE_ROOT_NOTED"


def root_notice() -> str | None:
    """The one line to print when this process runs as root, else None."""
    if not hasattr(os, "geteuid") or (os.geteuid() != 0 and os.getuid() != 0):
        return None
    return (
        "running as root: the workers, which run what clients send, have root's rights; "
        "run as an ordinary user where you can (the image runs as uid 10001)"
    )


def quiet_celery_root_warning() -> None:
    """Drop Celery's superuser warning in this worker process; the notice above replaces it."""
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
