"""SIGTERM handled like Ctrl-C: time limits (``timeout``, SLURM, Kubernetes) stop a run with a message and a
resume command instead of silently.

Inside :func:`terminate_as_interrupt`, SIGTERM raises :class:`Terminated` (a :class:`KeyboardInterrupt`) in the
main thread, so the code that already handles Ctrl-C handles it too. Every completed round is already in the
verified checkpoint (written atomically before its metrics row), so stopping anywhere loses at most the round in
progress. Exit codes follow the shell convention 128 + signal number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

EXIT_SIGINT = 128 + int(signal.SIGINT)  # 130
EXIT_SIGTERM = 128 + int(signal.SIGTERM)  # 143


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM inside :func:`terminate_as_interrupt`."""

    def __init__(self, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 128 + n for a signal ``n`` raised as :class:`Terminated`."""
    return 128 + exc.signum if isinstance(exc, Terminated) else EXIT_SIGINT


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread (the previous handler is put
    back afterwards). Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
