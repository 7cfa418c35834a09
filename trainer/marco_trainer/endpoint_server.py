"""A WSGI server whose threads do not grow with its connections.

The standard library's threading server starts a thread per connection and lets it
wait for a request for as long as the client likes: 300 idle connections are 300
threads. Here one thread accepts connections and watches them in a selector; a
connection goes to a small worker pool only once it has bytes to read, and then has
``request_timeout`` seconds to send its request and take its answer. A connection
that stays silent for ``idle_timeout`` seconds is closed, and past
``max_connections`` open ones the oldest is. Threads: one plus ``workers``, whatever
the clients do; daemon threads, so that a request in flight never keeps the trainer
from exiting.
"""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger(__name__)

WORKERS = 4
IDLE_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 128
_TICK = 0.25


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # StreamRequestHandler: the connection's socket timeout

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scraped every few seconds: keep the trainer's log for training


class BoundedWSGIServer(WSGIServer):
    """`WSGIServer` with a selector loop in place of `serve_forever`'s thread per request."""

    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        app: Any,
        *,
        workers: int = WORKERS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(address, _QuietHandler)
        self.set_app(app)
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._requests: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue()
        self._workers = [
            threading.Thread(target=self._work, name=f"endpoint-{i}", daemon=True)
            for i in range(workers)
        ]
        self._stop = threading.Event()
        self._stopped = threading.Event()
        # socket -> (client address, when it was accepted); insertion order is age order.
        self._waiting: dict[socket.socket, tuple[Any, float]] = {}

    def serve_forever(self, poll_interval: float = _TICK) -> None:
        for worker in self._workers:
            worker.start()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                while not self._stop.is_set():
                    for key, _ in selector.select(timeout=poll_interval):
                        if key.fileobj is self.socket:
                            self._accept(selector)
                        else:
                            self._dispatch(selector, key.fileobj)  # type: ignore[arg-type]
                    self._expire(selector, time.monotonic() - self.idle_timeout)
                for connection in list(self._waiting):
                    self._drop(selector, connection)
        finally:
            for _ in self._workers:
                self._requests.put(None)
            self._stopped.set()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            connection, address = self.socket.accept()
        except OSError:
            return
        self._waiting[connection] = (address, time.monotonic())
        selector.register(connection, selectors.EVENT_READ)
        while len(self._waiting) > self.max_connections:
            self._drop(selector, next(iter(self._waiting)))

    def _dispatch(self, selector: selectors.BaseSelector, connection: socket.socket) -> None:
        address, _ = self._waiting.pop(connection)
        selector.unregister(connection)
        if self._requests.qsize() >= self.max_connections:
            connection.close()  # the workers are that far behind: shed, do not queue
            return
        self._requests.put((connection, address))

    def _work(self) -> None:
        while (item := self._requests.get()) is not None:
            connection, address = item
            try:
                self.finish_request(connection, address)
            except Exception:
                log.debug("endpoint: request from %s failed", address, exc_info=True)
            finally:
                self.shutdown_request(connection)

    def _expire(self, selector: selectors.BaseSelector, before: float) -> None:
        for connection, (_, accepted) in list(self._waiting.items()):
            if accepted >= before:
                break  # age order: the rest are younger
            self._drop(selector, connection)

    def _drop(self, selector: selectors.BaseSelector, connection: socket.socket) -> None:
        self._waiting.pop(connection, None)
        selector.unregister(connection)
        connection.close()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()


class EndpointServer:
    """A WSGI app served by a `BoundedWSGIServer` in a background daemon thread."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1", **limits: Any) -> None:
        self._server = BoundedWSGIServer((host, port), app, **limits)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="endpoint-accept", daemon=True
        )

    def start(self) -> EndpointServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
