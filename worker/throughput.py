"""Samples per second as a progress bar shows them: over the last stretch of wall time, and overall.

One step's own rate is no rate at all: a step that also flushed records or evaluated the held-out
split looked 1,000x slower than the one after it (44 against 124,639 samples/s in one job). The rate
over a window of steps covers every second the run spent, flushes and evaluations included, so it
sums up to the overall rate instead of swinging around it.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 1.0


class Throughput:
    """Fed each step's end time (any monotonic clock) and batch size, from the time the run started."""

    def __init__(self, start: float, window_s: float = WINDOW_S) -> None:
        self.start, self.window_s = start, window_s
        self._steps: deque[tuple[float, int]] = deque()  # (end, samples) of the steps in the window
        self._edge = start  # where the window begins: the end of the last step it let go
        self._in_window = 0
        self._total = 0
        self._last = start

    def add(self, end: float, samples: int) -> float | None:
        """The rate over the steps that ended within the window before ``end``, this one included (at
        least this one, when it alone took longer); None when no time has passed."""
        self._steps.append((end, samples))
        self._in_window += samples
        self._total += samples
        self._last = end
        while len(self._steps) > 1 and self._steps[0][0] <= end - self.window_s:
            self._edge, dropped = self._steps.popleft()
            self._in_window -= dropped
        return self._in_window / (end - self._edge) if end > self._edge else None

    def overall(self) -> float | None:
        """Every sample so far over the wall time since the start, to the last step's end."""
        return self._total / (self._last - self.start) if self._last > self.start else None
