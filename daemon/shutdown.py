"""SIGTERM ends the daemon within 10 s, whatever a worker thread is stuck in.

The graceful path (stop listening, let requests finish for a few seconds, close processes and
terminals) is aiohttp's and the app's. What it cannot bound is a worker thread blocked in the
kernel (a read from a FIFO nobody writes to, a hung network mount): such a thread cannot be
interrupted, and Python waits for every worker thread before it exits. So:

- the worker pool is ours (`install_worker_pool`), so its threads can be told apart and released;
- after the graceful path, idle workers are released and busy ones get a short grace; if any is
  still busy, the process leaves without it (`os._exit`, after flushing its output);
- the first signal also arms SIGALRM at its default action (terminate) for the hard deadline, which
  the kernel enforces even if the interpreter itself is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

WORKER_PREFIX = "opentermd-worker"
#: Seconds from the signal to the end of the process, whatever happens.
HARD_DEADLINE = 9.5
#: Seconds requests in flight get to finish once the listening socket is closed.
REQUEST_GRACE = 3.0
#: Seconds busy worker threads get after everything else has closed.
WORKER_GRACE = 1.5


def install_worker_pool(loop: asyncio.AbstractEventLoop) -> ThreadPoolExecutor:
    """The default executor (`asyncio.to_thread`, `run_in_executor(None, ...)`), with named threads."""
    pool = ThreadPoolExecutor(thread_name_prefix=WORKER_PREFIX)
    loop.set_default_executor(pool)
    return pool


def arm_hard_deadline(seconds: float = HARD_DEADLINE) -> None:
    """SIGALRM's default action ends the process; no Python code has to run for it."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def release_workers(pool: ThreadPoolExecutor, grace: float = WORKER_GRACE) -> None:
    """Let idle workers go and busy ones finish for `grace` seconds; leave without the rest.

    Called last, when the server and the app are closed: nothing else is left to clean up.
    """
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for thread in _workers():
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in _workers() if thread.is_alive()]
    if stuck:
        log.warning("exiting with %d worker thread(s) still blocked: %s", len(stuck), ", ".join(stuck))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(WORKER_PREFIX)]
