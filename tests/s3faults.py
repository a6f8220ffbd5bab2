"""Real storage faults for tests: an S3 server that can go away and come back, and a
loopback TCP proxy that can freeze one request in flight (to kill a process mid-upload).

Both run in the test process. moto keeps its buckets in process memory, so a server
stopped and started again on the same port serves the same objects, as a restarted
S3 endpoint would.
"""

from __future__ import annotations

import logging
import socket
import threading

from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestartableS3:
    """A moto S3 server on a fixed loopback port that :meth:`stop` and :meth:`start` toggle."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: ThreadedMotoServer | None = None

    def start(self) -> None:
        assert self._server is None
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        """Close the listening socket: clients now get 'connection refused'."""
        assert self._server is not None
        self._server.stop()
        self._server = None

    @property
    def up(self) -> bool:
        return self._server is not None


class FreezingProxy:
    """Forwards loopback TCP to ``upstream_port``; freezes the first request containing ``freeze_on``.

    When a chunk the client sends contains ``freeze_on`` (e.g. an object key in a PUT's
    request line), only half of that chunk is forwarded and the connection then hangs:
    the client is left mid-request, the server holds a partial request. ``frozen`` is
    set at that moment. Every other connection is forwarded as is.
    """

    def __init__(self, upstream_port: int, freeze_on: bytes | None = None) -> None:
        self.upstream_port = upstream_port
        self.freeze_on = freeze_on
        self.frozen = threading.Event()
        self.frozen_request = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if (from_client and self.freeze_on and not self.frozen.is_set()
                        and self.freeze_on in data):
                    self.frozen_request = data.split(b"\r\n", 1)[0]
                    dst.sendall(data[: len(data) // 2])
                    self.frozen.set()
                    self._closed.wait()  # hang here: nothing more of this request goes through
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
