"""What the client and the server must agree on, in one place that imports neither torch nor pydantic:
the states a job, sweep or trial can be in (``states``), the server-sent event format (``sse``) and the
catalogue's names and fields (``catalogue``). The binary codec (``codec``) is the one part that needs torch,
and is imported on its own: ``from gradserve.protocol import codec``.

The server's schemas and stores, the client and the dashboard (through ``GET /protocol``) all read
these; nothing else spells a status or parses an event stream.
"""

from gradserve.protocol.catalogue import LOSS_FIELDS, MODULE_FIELDS, TUPLE_MODULES
from gradserve.protocol.sse import encode_event, parse_events
from gradserve.protocol.states import (
    JOB_STOPPED,
    JOB_TERMINAL,
    SWEEP_TERMINAL,
    TRIAL_ENDED,
    JobStatus,
    SweepStatus,
    TrialState,
    public_states,
)

__all__ = [
    "JOB_STOPPED",
    "JOB_TERMINAL",
    "LOSS_FIELDS",
    "MODULE_FIELDS",
    "SWEEP_TERMINAL",
    "TRIAL_ENDED",
    "TUPLE_MODULES",
    "JobStatus",
    "SweepStatus",
    "TrialState",
    "encode_event",
    "parse_events",
    "public_states",
]
