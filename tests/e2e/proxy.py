"""A loopback TCP proxy that drops a task stream mid-way, to test that clients re-attach.

Everything is forwarded byte for byte. When a client sends a stream request (``/execute`` or
``/events``) and ``cuts`` remain, the proxy forwards that response only up to the end of its
``cut_after``-th event line, then closes both sides: the client sees its connection die in the
middle of a chunked response, exactly like a network drop. Later streams pass untouched.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field

from tests.e2e.server import free_port

STREAM_REQUEST = re.compile(rb"^(GET|POST) [^ ]*/tasks/[^/ ]+/(execute|events)[ ?]", re.MULTILINE)
EVENT = b'"event_type"'


@dataclass
class StreamRecord:
    request_line: str
    cut: bool
    events_forwarded: int = 0


@dataclass
class CuttingProxy:
    upstream_port: int
    cut_after: int = 3
    cuts: int = 1
    port: int = field(default_factory=free_port)
    streams: list[StreamRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closing = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._listener.close()
        self._thread.join(timeout=5)

    @property
    def cut_streams(self) -> list[StreamRecord]:
        return [s for s in self.streams if s.cut]

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state: dict[str, StreamRecord | None] = {"armed": None}
            threading.Thread(target=self._client_to_server, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(upstream, client, state), daemon=True).start()

    def _client_to_server(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            while data := client.recv(65536):
                match = STREAM_REQUEST.search(data)
                if match:
                    with self._lock:
                        cut = len(self.cut_streams) < self.cuts
                        record = StreamRecord(data[: data.index(b"\r\n")].decode(errors="replace"), cut)
                        self.streams.append(record)
                    state["armed"] = record if cut else None
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := upstream.recv(65536):
                record = state["armed"]
                if record is not None:
                    cut_at = self._cut_position(data, record)
                    if cut_at is not None:
                        client.sendall(data[:cut_at])
                        break  # the drop: both connections close now
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _cut_position(self, data: bytes, record: StreamRecord) -> int | None:
        """Where in ``data`` the ``cut_after``-th event line ends, if it does; counts events seen."""
        start = 0
        while (found := data.find(EVENT, start)) >= 0:
            record.events_forwarded += 1
            start = found + len(EVENT)
            if record.events_forwarded == self.cut_after:
                end = data.find(b"\n", start)
                return len(data) if end < 0 else end + 1
        return None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
