"""Ctrl-C pressed from inside a run, at a chosen moment: a real SIGINT, as a user's terminal sends it."""

from __future__ import annotations

import os
import signal


def interrupt_at(stage: str):
    """A progress callback that presses Ctrl-C (a real SIGINT) when ``stage`` reports progress."""
    def callback(event):
        if event["event"] == "update" and event["stage"] == stage and not callback.sent:
            callback.sent = True
            os.kill(os.getpid(), signal.SIGINT)
    callback.sent = False
    return callback
