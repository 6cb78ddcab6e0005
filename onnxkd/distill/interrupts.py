"""Ctrl-C between steps, not inside one: an optimiser step cut in half would corrupt the weights.

Inside ``deferred()`` the first SIGINT only sets a flag; the training loop calls ``check()`` after
each whole step and raises KeyboardInterrupt there (the trainer then saves a resumable checkpoint).
A second Ctrl-C interrupts at once. Outside the main thread (where signals cannot be handled) it
changes nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_pending = False


@contextlib.contextmanager
def deferred():
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        global _pending
        if _pending:
            raise KeyboardInterrupt
        _pending = True

    _pending = False
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending = False


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed since the last check."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
