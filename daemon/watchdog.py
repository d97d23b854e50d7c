"""Event-loop stall watchdog: how late the loop ran a timer, as the longest stall since start.

A task sleeps `interval` seconds again and again; each time it wakes it notes how much later than due
it woke. Whatever held the loop (a blocking call, a long callback, a collector pause) shows up as that
lateness, so the longest one bounds how long any request waited for the loop.

Beside it, the most CPU time the loop's thread used between two ticks: what the daemon's own code
held the loop for (a long callback, or many ready at once), whatever the machine's other load. A stall
far longer than that was the process waiting for a CPU (a busy machine) or for the GIL (a worker thread).

It is off by default (`OPEN_TERMINAL_LOOP_WATCHDOG`): fifty wake-ups a second cost about 4.5 ms of CPU
per second on an idle daemon (measured on the bench machine), which an idle daemon should not spend.
The figures go to `<state>/loop-stall.json` whenever one of them grows (rare: a maximum only grows so
often) and to the log at shutdown, so a benchmark reads them without any endpoint
(`/openapi.json` stays the reference's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STALL_FILE = "loop-stall.json"
INTERVAL = 0.02
#: A stall this long delays every request in flight; each new longest one past it is logged at once.
WARN_STALL = 0.1


class LoopWatchdog:
    """The longest lateness of a repeating `interval` timer, in seconds; reported to `report_path`."""

    def __init__(self, report_path: Path | None, interval: float = INTERVAL) -> None:
        self.report_path = report_path
        self.interval = interval
        self.longest = 0.0
        #: The most CPU seconds the loop's thread used between two ticks.
        self.busiest = 0.0
        self.ticks = 0

    async def watch(self) -> None:
        """Run until cancelled."""
        loop = asyncio.get_running_loop()
        self.write()  # a file left by an earlier run never speaks for this one
        while True:
            due = loop.time() + self.interval
            cpu = time.thread_time()
            await asyncio.sleep(self.interval)
            self.ticks += 1
            late, busy = loop.time() - due, time.thread_time() - cpu
            if late > self.longest or busy > self.busiest:
                if late > self.longest and late >= WARN_STALL:
                    log.warning("the event loop stalled for %.1f ms (%.1f ms of it on CPU)", late * 1000, busy * 1000)
                self.longest, self.busiest = max(late, self.longest), max(busy, self.busiest)
                self.write()

    def summary(self) -> dict[str, Any]:
        return {"longest_stall_ms": round(self.longest * 1000, 2),
                "longest_busy_ms": round(self.busiest * 1000, 2), "ticks": self.ticks,
                "interval_ms": round(self.interval * 1000, 2)}

    def write(self) -> None:
        """Replace the report atomically, so a reader never sees half of it. A few small writes in a
        daemon's life; a failure (a read-only state dir) costs the report, never the daemon."""
        if self.report_path is None:
            return
        temporary = self.report_path.with_name(f".{self.report_path.name}.{os.getpid()}")
        try:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(self.summary()) + "\n")
            os.replace(temporary, self.report_path)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.report_path, exc)


def cleanup_context(report_path: Path, interval: float = INTERVAL) -> Callable[[Any], AsyncIterator[None]]:
    """For `app.cleanup_ctx`: the watchdog runs while the app does; its figure is logged at shutdown."""

    async def lifetime(app: Any) -> AsyncIterator[None]:
        watchdog = LoopWatchdog(report_path, interval)
        task = asyncio.create_task(watchdog.watch(), name="loop-watchdog")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        watchdog.write()
        log.info("longest event-loop stall: %.1f ms (longest busy: %.1f ms; %d ticks of %.0f ms)",
                 watchdog.longest * 1000, watchdog.busiest * 1000, watchdog.ticks, watchdog.interval * 1000)

    return lifetime
