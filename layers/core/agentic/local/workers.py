"""Several server processes on one port and one SQLite file (``WORKERS``): the supervisor.

Why: a Python process runs its requests, streams and runs on one core (one event loop, and the
GIL). The store already lets any number of processes share the file (leases, conditional writes,
see ``adapters/sqlite_store.py``), so ``WORKERS=2`` on a 2-core machine serves a burst on both cores:
100 tasks at once took 1.47x their agent work with one process and ~1.35x with two (see the
README's *Speed*, eighth pass).

The supervisor binds the port (a port that is taken fails before anything starts), forks the
workers before any thread exists, then only waits: it wakes when a worker exits or a signal
arrives, so an idle server costs nothing more. On Linux each worker listens on a socket of its own
bound to the same port (``SO_REUSEPORT``: the kernel spreads new connections over them evenly; with
one shared socket, the worker that happened to be polling took most of a burst); elsewhere the
workers share the supervisor's socket.

- A stop signal (Ctrl-C, SIGTERM) to the supervisor stops every worker once, gracefully (each in a
  process group of its own, so a terminal's Ctrl-C reaches only the supervisor: a second signal
  would make uvicorn skip its graceful shutdown).
- A worker that dies (a crash, ``kill -9``) is replaced; what it was running is resumed once its
  leases expire, by whichever process claims it first. A worker that could not start (exit code
  ``EXIT_BAD_SETTING``, its message already on stderr) stops the others and the supervisor exits with
  its code; so do workers that keep dying (``MAX_RESTARTS`` within ``RESTART_WINDOW_SECONDS``).
- A worker whose supervisor died (``kill -9``) stops by itself: it holds the read end of a pipe
  whose only write end the supervisor holds, and stops when that pipe is closed.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import FrameType

#: Replacements of dead workers allowed within RESTART_WINDOW_SECONDS before the supervisor gives up.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Where the kernel spreads the connections of one port over several listening sockets.
SPREADS_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listen(host: str, port: int, *, first: bool = False) -> socket.socket:
    """A listening socket a worker may share the port with (``SO_REUSEPORT`` where it spreads load).

    ``first``: the supervisor's, which must find the port free: another server's ``SO_REUSEPORT``
    sockets would otherwise let it join their group and split the connections with it."""
    if first and SPREADS_CONNECTIONS:
        with socket.create_server((host, port)) as probe:  # fails if anyone listens there
            port = probe.getsockname()[1]
    return socket.create_server((host, port), reuse_port=SPREADS_CONNECTIONS)


#: A worker's listening socket, opened when the worker is ready to serve (its app built).
OpenSocket = Callable[[], socket.socket]


class Supervisor:
    """Forks ``count`` workers, each running ``serve(index, open_socket)`` (its exit code), and keeps
    them up. A worker calls ``open_socket`` once its app is built: a socket of its own starts taking
    a share of the port's connections as soon as it listens, so one opened earlier would hold them
    while the worker starts (or reset them, if it cannot)."""

    def __init__(
        self,
        count: int,
        sock: socket.socket,
        serve: Callable[[int, OpenSocket], int],
        *,
        startup_failure: int,
        say: Callable[[str], None],
    ) -> None:
        self.count = count
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.serve = serve
        self.startup_failure = startup_failure
        self.say = say
        self.workers: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.exit_code = 0
        self._restarts: list[float] = []
        self._lifeline_read, self._lifeline_write = os.pipe()

    def run(self) -> int:
        """Start the workers and supervise them until they have all stopped; the exit code."""
        previous = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
        # An ignored SIGCHLD (inherited across exec) would reap the workers unseen by os.wait.
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            for index in range(self.count):
                if self.stopping:
                    break
                self._fork(index)
            if SPREADS_CONNECTIONS:
                self.sock.close()  # worker 0 listens on it; a socket nobody accepts on would hold connections
            while self.workers:
                pid, status = os.wait()  # a signal's handler runs, then the wait goes on (PEP 475)
                if pid not in self.workers:
                    continue
                index = self.workers.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if not self.stopping:
                    self._replace(index, pid, code)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._lifeline_write)
            os.close(self._lifeline_read)
        return self.exit_code

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self._stop_all()

    def _stop_all(self, code: int | None = None) -> None:
        if code is not None and not self.exit_code:
            self.exit_code = code
        self.stopping = True
        for pid in list(self.workers):
            with suppress(ProcessLookupError):  # exited already: the wait collects it
                os.kill(pid, signal.SIGTERM)

    def _replace(self, index: int, pid: int, code: int) -> None:
        if code == self.startup_failure:
            self.say(f"worker {index} (pid {pid}) could not start; stopping")
            self._stop_all(code)
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_SECONDS] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            self.say(f"workers died {len(self._restarts)} times within {RESTART_WINDOW_SECONDS:g} s; stopping")
            self._stop_all(1)
            return
        self.say(f"worker {index} (pid {pid}) exited with {code}; starting another")
        self._fork(index, replacement=True)

    def _fork(self, index: int, replacement: bool = False) -> None:
        # Stop signals are held back across the fork: one that reached the child before it had its
        # own handlers would run the supervisor's there (and be used up), and the child would serve on.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid:
            self.workers[pid] = index
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a stop held back runs now
            if self.stopping:  # a stop came in while it was being forked
                os.kill(pid, signal.SIGTERM)
            return
        code = 1
        try:
            os.setpgid(0, 0)
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a stop sent meanwhile ends it now
            os.close(self._lifeline_write)
            threading.Thread(target=_stop_when_closed, args=(self._lifeline_read,), daemon=True).start()
            sock = self.sock
            open_socket: OpenSocket = lambda: sock  # noqa: E731 - the supervisor's, listening already
            if SPREADS_CONNECTIONS and (index or replacement):
                sock.close()
                open_socket = functools.partial(listen, self.host, self.port)
            code = self.serve(index, open_socket)
        except SystemExit as exc:  # the worker's own ``fail`` (a bad setting): its message is out
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # never back into the supervisor's code (its finally blocks, atexit)


def _stop_when_closed(fd: int) -> None:
    """In a worker: stop gracefully once the supervisor's end of the lifeline is closed (it died)."""
    while os.read(fd, 1):
        pass
    os.kill(os.getpid(), signal.SIGTERM)
