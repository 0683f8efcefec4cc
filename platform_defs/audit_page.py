"""The read-only audit pages `make run` serves beside the Dagster UI: ``GET /audit/<run id>``.

Dagster has no page for what an artifact read or which log lines it came from, so the context
index's materializations link here: each page renders :func:`agentlake.context.audit.audit` of
one run as HTML, every value escaped. Only GET is answered (any other method is refused by the
server itself), the run id is checked before anything is read, and nothing can be changed from
a page. It listens on 127.0.0.1 only, on ``AGENTLAKE_AUDIT_PORT``.
"""

from __future__ import annotations

import html
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agentlake.config import Settings
from agentlake.context.assembly import ArtifactNotFound, InvalidRequest
from agentlake.context.audit import audit, render_html
from agentlake.errors import AgentLakeError
from agentlake.tables.lake import Lake
from platform_defs.environment import resolve_settings

AUDIT_PATH = "/audit/"


def audit_url(settings: Settings, run_id: str) -> str:
    """The address of run ``run_id``'s audit page."""
    return f"http://127.0.0.1:{settings.audit_port}{AUDIT_PATH}{urllib.parse.quote(run_id, safe='')}"


def make_server(settings: Settings, port: int | None = None) -> ThreadingHTTPServer:
    """A server of the audit pages of this deployment on 127.0.0.1 (``port`` 0: any free port)."""
    lake = Lake(settings)
    dagster_url = f"http://127.0.0.1:{settings.ui_port}"
    lock = threading.Lock()  # one walk at a time: each opens a query engine, and the machine is small

    class Handler(BaseHTTPRequestHandler):
        server_version = "agentlake-audit"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urllib.parse.urlsplit(self.path).path
            if not path.startswith(AUDIT_PATH):
                self._send(HTTPStatus.NOT_FOUND, _page("Not found", f"Audit pages are at {AUDIT_PATH}RUN_ID."))
                return
            run_id = urllib.parse.unquote(path[len(AUDIT_PATH):])
            try:
                with lock:
                    body = render_html(audit(lake, run_id), dagster_url=dagster_url)
            except InvalidRequest as exc:
                self._send(HTTPStatus.BAD_REQUEST, _page("Bad run id", str(exc)))
                return
            except ArtifactNotFound as exc:
                self._send(HTTPStatus.NOT_FOUND, _page("Unknown run", str(exc)))
                return
            except AgentLakeError as exc:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, _page("The audit could not be completed", str(exc)))
                return
            self._send(HTTPStatus.OK, body)

        def _send(self, status: HTTPStatus, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
            sys.stderr.write(f"audit page: {format % args}\n")

    return ThreadingHTTPServer(("127.0.0.1", settings.audit_port if port is None else port), Handler)


def _page(title: str, text: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")


def main() -> int:
    server = make_server(resolve_settings())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
