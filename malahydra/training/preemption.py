"""Deferral of stop signals to the next optimizer-step boundary.

SLURM signals a job before a time limit or preemption (SIGUSR1 through submitit's
`--signal`, SIGTERM from `scancel` or the scheduler); a user presses Ctrl-C (SIGINT).
Acting on such a signal in the middle of an optimizer step could checkpoint a half-updated
state. `DeferredSignals` only records the signal; the trainer checks `requested` after
each step, writes its checkpoint, and then calls `deliver()`, which runs the handler that
was installed before (submitit's requeue handler, Python's KeyboardInterrupt, or the
default action, which ends the process).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class DeferredSignals:
    """Context manager that holds back STOP_SIGNALS until `deliver()` is called."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS):
        self.signals = signals
        self.previous: dict[int, object] = {}
        self.pending: list[int] = []

    @property
    def requested(self) -> bool:
        return bool(self.pending)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def __enter__(self) -> "DeferredSignals":
        # Python accepts signal handlers only in the main thread; elsewhere signals keep
        # their current handlers and training stops wherever they strike.
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self.previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def deliver(self) -> None:
        """Hand each pending signal to the handler that was installed before this one.

        The previous handlers are restored first, so a handler that ends the process or
        raises (KeyboardInterrupt) does so now. If every handler returns, training goes on
        with the deferral re-armed.
        """
        pending, self.pending = self.pending, []
        previous = dict(self.previous)
        self._restore()
        for signum in pending:
            name = signal.Signals(signum).name
            handler = previous.get(signum, signal.SIG_DFL)
            log.warning("Received %s; checkpoint written, passing the signal on", name)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
        self.__enter__()
