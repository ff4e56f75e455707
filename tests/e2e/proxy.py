"""A loopback TCP proxy that drops a task stream mid-way, to test that clients re-attach.

Everything is forwarded byte for byte. When a client sends a stream request (``/execute`` or
``/events``) and ``cuts`` remain, the proxy forwards that response's chunks until one has carried
the ``cut_after``-th event, then closes both sides: the client sees its connection die in the middle
of a chunked response (no final empty chunk), exactly like a network drop. Cutting on a chunk
boundary makes "what the client had received" exact: ``last_cursor`` is the cursor it must resume
after. Later streams pass untouched.
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
CURSOR = re.compile(rb'"cursor":\s*(\d+)')


@dataclass
class StreamRecord:
    request_line: str
    cut: bool
    head: str = ""  # the request line and headers
    events_forwarded: int = 0
    last_cursor: int | None = None  # of the last event forwarded
    response_head_sent: bool = False
    finished: bool = False  # the response ended normally

    @property
    def last_event_id(self) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "last-event-id":
                return value.strip()
        return None


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
        socket.create_connection(("127.0.0.1", self.port)).close()  # wakes the blocked accept()
        self._thread.join(timeout=5)
        self._listener.close()

    @property
    def cut_streams(self) -> list[StreamRecord]:
        return [s for s in self.streams if s.cut]

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closing:
                client.close()
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
                        head = data[match.start() :].split(b"\r\n\r\n")[0].decode(errors="replace")
                        record = StreamRecord(head.split("\r\n")[0], cut, head)
                        self.streams.append(record)
                    state["armed"] = record
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        pending = b""  # bytes of a stream response not forwarded yet (it goes out chunk by chunk)
        try:
            while data := upstream.recv(65536):
                record = state["armed"]
                if record is None:
                    client.sendall(data)
                    continue
                pending += data
                forward, pending, cut = self._take_chunks(pending, record)
                if record.finished:  # the stream ended; what follows on this connection passes as is
                    forward, pending = forward + pending, b""
                    state["armed"] = None
                client.sendall(forward)
                if cut:
                    break  # the drop: both connections close now
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _take_chunks(self, pending: bytes, record: StreamRecord) -> tuple[bytes, bytes, bool]:
        """The whole chunks at the front of ``pending`` (after the response head), the rest, and
        whether the cut point was reached."""
        out = b""
        if not record.response_head_sent:  # forwarded as soon as it is complete
            end = pending.find(b"\r\n\r\n")
            if end < 0:
                return b"", pending, False
            out, pending = pending[: end + 4], pending[end + 4 :]
            record.response_head_sent = True
            if b"transfer-encoding: chunked" not in out.lower():  # not a stream (an error): pass it on
                record.finished = True
                return out, pending, False
        while (line_end := pending.find(b"\r\n")) >= 0:
            size = int(pending[:line_end].split(b";")[0], 16)
            total = line_end + 2 + size + 2
            if len(pending) < total:
                break
            chunk, pending = pending[:total], pending[total:]
            out += chunk
            if size == 0:  # the last chunk: the response is complete
                record.finished = True
                return out, pending, False
            record.events_forwarded += chunk.count(EVENT)
            cursors = CURSOR.findall(chunk)
            if cursors:
                record.last_cursor = int(cursors[-1])
            if record.cut and record.events_forwarded >= self.cut_after:
                return out, pending, True
        return out, pending, False


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
