"""A fault-injecting HTTP proxy in front of the loopback S3 server: the store misbehaving on purpose.

Every request is read whole, then a seeded RNG decides its fate: pass through, delay (up to
``max_delay_s``), or fail, the failures split evenly between

- ``500``: InternalError with S3's XML error body, the request never reaches the server;
- ``503``: SlowDown with S3's XML error body, the request never reaches the server;
- ``reset``: the connection is reset before the request reaches the server;
- ``lost``: the server does the work, then the connection is reset before the response
  (a conditional create seen as "already exists" on the retry);
- ``cut``: the server answers, the response headers and half the body go out, then a reset.

``fault_on(match, fault)`` gives one chosen request one of these faults, or ``stall``: no answer
for ``stall_s`` seconds (longer than the client waits), then a reset.

``down_for(seconds)`` (or ``down_on(match, seconds)``, triggered by a request) makes the store
unreachable: every request's connection is reset until the time is up.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

FAULTS = ("500", "503", "reset", "lost", "cut")
TARGETED_FAULTS = (*FAULTS, "stall")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}

Match = Callable[[str, str], bool]  # (method, decoded path without the query) -> whether this request triggers


class FaultyS3Proxy:
    """A threaded HTTP proxy on 127.0.0.1 forwarding to ``upstream``, injecting faults.

    Args:
        upstream: the S3-compatible server, ``http://host:port``.
        fail_share: share of requests that fail (500, 503, reset, lost response, cut body).
        delay_share: share of requests delayed by up to ``max_delay_s`` before being forwarded.
        seed: seed of the RNG that decides each request's fate.
    """

    def __init__(self, upstream: str, *, fail_share: float = 0.0, delay_share: float = 0.0,
                 max_delay_s: float = 2.0, seed: int = 0, stall_s: float = 5.0) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.fail_share = fail_share
        self.delay_share = delay_share
        self.max_delay_s = max_delay_s
        self.stall_s = stall_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._triggers: list[tuple[Match, str]] = []  # one-shot: (match, fault or "down:<seconds>")
        self.outcomes: Counter[str] = Counter()  # fate -> count
        self.by_client: Counter[str] = Counter()  # "<client> <fate>" -> count
        self.requests = 0
        self.delayed_s = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, fail_share: float, delay_share: float) -> None:
        with self._lock:
            self.fail_share, self.delay_share = fail_share, delay_share

    def down_for(self, seconds: float) -> None:
        """The store is unreachable from now for ``seconds``: every connection is reset."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self.outcomes["outages"] += 1

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def down_on(self, match: Match, seconds: float) -> None:
        """The first request matching ``match`` takes the store down for ``seconds`` (itself included)."""
        with self._lock:
            self._triggers.append((match, f"down:{seconds}"))

    def fault_on(self, match: Match, fault: str) -> None:
        """The first request matching ``match`` gets ``fault`` (one of ``TARGETED_FAULTS``)."""
        assert fault in TARGETED_FAULTS, fault
        with self._lock:
            self._triggers.append((match, fault))

    def _fate(self, method: str, path: str) -> tuple[str, float]:
        """What happens to this request: a fault, ``delay`` (with seconds) or ``pass``."""
        path = unquote(path.split("?")[0])
        with self._lock:
            self.requests += 1
            for i, (match, what) in enumerate(self._triggers):
                if match(method, path):
                    del self._triggers[i]
                    if what.startswith("down:"):
                        self._down_until = time.monotonic() + float(what.split(":")[1])
                        self.outcomes["outages"] += 1
                        break
                    return what, 0.0
            if time.monotonic() < self._down_until:
                return "down", 0.0
            draw = self._rng.random()
            if draw < self.fail_share:
                return FAULTS[int(draw / self.fail_share * len(FAULTS)) % len(FAULTS)], 0.0
            if draw < self.fail_share + self.delay_share:
                return "delay", self._rng.uniform(0.0, self.max_delay_s)
            return "pass", 0.0

    def _note(self, fate: str, client: str, delay: float = 0.0) -> None:
        with self._lock:
            self.outcomes[fate] += 1
            self.by_client[f"{client} {fate}"] += 1
            self.delayed_s += delay


def _client(user_agent: str) -> str:
    agent = user_agent.lower()
    if "object_store" in agent or "obstore" in agent:
        return "obstore"
    if "aws-sdk-cpp" in agent or "arrow" in agent:
        return "pyarrow"
    return "other"


def _handler(proxy: FaultyS3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as they are written

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._proxy()

        do_PUT = do_POST = do_HEAD = do_DELETE = do_GET  # noqa: N815

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reset(self) -> None:
            """Abort the connection with a TCP reset (no FIN, no response)."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass

        def _error(self, fault: str) -> None:
            status, reason, code, message = _ERRORS[fault]
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<Resource>{self.path.split('?')[0]}</Resource>"
                f"<RequestId>{random.getrandbits(64):016X}</RequestId></Error>"
            ).encode()
            self.send_response(status, reason)
            self.send_header("Content-Type", "application/xml")
            if fault == "503":
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _proxy(self) -> None:
            body = self._body()
            client = _client(self.headers.get("User-Agent", ""))
            fate, delay = proxy._fate(self.command, self.path)
            proxy._note(fate, client, delay)
            if fate == "stall":
                time.sleep(proxy.stall_s)
            if fate in ("down", "reset", "stall"):
                return self._reset()
            if fate in ("500", "503"):
                return self._error(fate)
            if delay:
                time.sleep(delay)
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        conn.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                payload = response.read()
                headers = response.getheaders()
                status, reason = response.status, response.reason
            finally:
                conn.close()
            if fate == "lost":
                return self._reset()
            self.send_response(status, reason)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() not in ("server", "date"):
                    self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return None
            if fate == "cut":  # half the body, or nothing if there is no body to cut
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                return self._reset()
            self.wfile.write(payload)
            return None

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass

    return Handler
