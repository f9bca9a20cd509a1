"""Stop requests: Ctrl-C (SIGINT) and SIGTERM (what schedulers, ``kill`` and torchrun send).

The first one asks the loop to stop after the current step (it saves ``last.pt`` and raises
:class:`mcgraph.errors.Interrupted`); a second one, of either kind, aborts at once
(``KeyboardInterrupt``; the previous ``last.pt`` stays as it was).
"""
from __future__ import annotations

import signal

SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class StopFlag:
    """``set`` once a stop was asked for; ``reason`` says by what ("Ctrl-C", "SIGTERM")."""

    def __init__(self):
        self.set, self.reason, self._old = False, None, {}

    def __enter__(self):
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:        # not the main thread: no handler, default behaviour
                pass
        return self

    def _handle(self, signum, _frame):
        if self.set:
            raise KeyboardInterrupt
        self.set, self.reason = True, SIGNALS.get(signum, f"signal {signum}")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            if old is not None:       # None: a handler not set from Python, left as it is
                signal.signal(sig, old)
        self._old = {}
        return False
