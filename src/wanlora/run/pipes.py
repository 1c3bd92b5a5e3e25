"""How workers talk to the parent: one pipe per worker, and log records sent over it.

Messages are tuples (kind, expert, rank, payload): "step" (a StepReport), "log" (level,
text), "done" (an ExpertResult), "stopped", "error" (what, fix).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.connection
import queue as queue_module


class Inbox:
    """The parent's end of one pipe per worker. A pipe send is synchronous (multiprocessing's
    Queue hands messages to a feeder thread, which was seen keeping a finished worker from
    exiting under load), so a worker that has reported can always exit."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.readers: list = []
        self._writer = None

    def new_pipe(self):
        reader, self._writer = self.ctx.Pipe(duplex=False)
        self.readers.append(reader)
        return self._writer

    def close_writer(self) -> None:
        self._writer.close()  # so the reader sees EOF once the worker is gone

    def get(self, timeout: float):
        for reader in multiprocessing.connection.wait(self.readers, timeout):
            try:
                return reader.recv()
            except (EOFError, OSError):  # that worker has exited
                self.readers.remove(reader)
        raise queue_module.Empty


class LogToParent(logging.Handler):
    """In a worker: wanlora's log records go to the parent, which shows them (a spawned
    process has no logging set up, and its INFO lines would be lost)."""

    def __init__(self, outbox: Outbox, expert: str, rank: int):
        super().__init__(logging.INFO)
        self.outbox, self.expert, self.rank = outbox, expert, rank

    def emit(self, record: logging.LogRecord) -> None:
        message = ("log", self.expert, self.rank, (record.levelno, record.getMessage()))
        with contextlib.suppress(OSError, ValueError):  # the parent is gone: nobody to tell
            self.outbox.put(message)


class Outbox:
    """A worker's end: `put` sends at once."""

    def __init__(self, writer):
        self.writer = writer

    def put(self, message) -> None:
        self.writer.send(message)

    def close(self) -> None:
        self.writer.close()
