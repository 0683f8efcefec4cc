"""The demo helpdesk: a SQLite database of tickets and customers that moves forward in simulated time.

``agentlake sources demo`` creates it under ``AGENTLAKE_HOME/sources/helpdesk.db``; ``--advance
MINUTES`` moves its clock on: tickets are opened, updated and closed, customers change plan, now and
then a ticket is deleted. A delete is reported the way many helpdesks do, as a soft delete
(``is_deleted = 1`` with a new ``updated_at``), so an incremental load on ``updated_at`` sees it.

``serve`` answers a small read-only HTTP API over the same database on loopback, as a helpdesk's REST
API would: ``GET /api/v1/comments?updated_since=ISO&page=N&per_page=M`` returns
``{"data": [...], "page": N, "next_page": N+1 | null}``, the ticket comments changed at or after
``updated_since``, oldest first (the ``rest_api`` source loads them into ``ext.ticket_comments``).

Deterministic for a seed: the database keeps its clock and step count, and each step draws from a
generator seeded with (seed, step), so two databases advanced the same way hold the same rows.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DEMO_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STEP = timedelta(minutes=1)
PLANS = ("free", "team", "business", "enterprise")
STATUSES = ("open", "pending", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
SUBJECTS = ("cannot log in", "refund request", "API returns 500", "invoice is wrong", "slow dashboard",
            "export fails", "agent gave a wrong answer", "upgrade plan", "delete my data", "SSO setup")
INITIAL_CUSTOMERS = 20
INITIAL_TICKETS = 40
API_PATH = "/api/v1/comments"
MAX_PER_PAGE = 500

SCHEMA = """
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    is_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tickets (
    ticket_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    opened_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    closed_at TIMESTAMP,
    is_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE ticket_comments (
    comment_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    is_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tickets_updated_at ON tickets (updated_at);
CREATE INDEX customers_updated_at ON customers (updated_at);
CREATE INDEX ticket_comments_updated_at ON ticket_comments (updated_at);
CREATE TABLE demo_clock (seed INTEGER NOT NULL, step INTEGER NOT NULL, now TIMESTAMP NOT NULL);
"""


@dataclass(frozen=True)
class DemoState:
    """Where the demo database stands: its path, simulated clock and row counts."""

    path: Path
    seed: int
    step: int
    now: datetime
    tickets: int
    customers: int
    comments: int

    def as_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "seed": self.seed, "step": self.step, "now": self.now.isoformat(),
                "tickets": self.tickets, "customers": self.customers, "ticket_comments": self.comments}


def _ts(moment: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME format: the loader reads it back as a timestamp (UTC by convention).
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def create(path: Path, *, seed: int = 0) -> DemoState:
    """Create the demo database at ``path`` (if it is not there yet) with its first customers and tickets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        partial = path.with_suffix(".creating")
        partial.unlink(missing_ok=True)
        with sqlite3.connect(partial) as con:
            con.executescript(SCHEMA)
            rng = random.Random(f"{seed}:0")
            now = DEMO_START
            for i in range(INITIAL_CUSTOMERS):
                con.execute("INSERT INTO customers VALUES (?, ?, ?, ?, 0)",
                            (f"c{i:05d}", f"Customer {i}", rng.choice(PLANS), _ts(now)))
            for _ in range(INITIAL_TICKETS):
                _open_ticket(con, rng, now)
            con.execute("INSERT INTO demo_clock VALUES (?, 0, ?)", (seed, _ts(now)))
        con.close()
        partial.replace(path)  # a crash mid-creation never leaves a half-made database in place
    return state(path)


def advance(path: Path, minutes: int) -> DemoState:
    """Move the demo database ``minutes`` of simulated time forward, one step per minute."""
    with sqlite3.connect(path) as con:
        seed, step, now_text = con.execute("SELECT seed, step, now FROM demo_clock").fetchone()
        now = datetime.fromisoformat(now_text).replace(tzinfo=UTC)
        for _ in range(minutes):
            step += 1
            now += STEP
            _step(con, random.Random(f"{seed}:{step}"), now)
        con.execute("UPDATE demo_clock SET step = ?, now = ?", (step, _ts(now)))
    con.close()
    return state(path)


def state(path: Path) -> DemoState:
    """The demo database's clock and counts (deleted rows not counted)."""
    with sqlite3.connect(path) as con:
        seed, step, now_text = con.execute("SELECT seed, step, now FROM demo_clock").fetchone()
        counts = [con.execute(f"SELECT count(*) FROM {t} WHERE is_deleted = 0").fetchone()[0]  # noqa: S608
                  for t in ("tickets", "customers", "ticket_comments")]
    con.close()
    return DemoState(path, seed, step, datetime.fromisoformat(now_text).replace(tzinfo=UTC), *counts)


def _open_ticket(con: sqlite3.Connection, rng: random.Random, now: datetime) -> None:
    (n,) = con.execute("SELECT count(*) FROM tickets").fetchone()
    (customers,) = con.execute("SELECT count(*) FROM customers").fetchone()
    ticket_id = f"t{n:06d}"
    con.execute("INSERT INTO tickets VALUES (?, ?, ?, 'open', ?, ?, ?, NULL, 0)",
                (ticket_id, f"c{rng.randrange(customers):05d}", rng.choice(SUBJECTS), rng.choice(PRIORITIES),
                 _ts(now), _ts(now)))
    _comment(con, rng, ticket_id, now, "customer")


def _comment(con: sqlite3.Connection, rng: random.Random, ticket_id: str, now: datetime, author: str) -> None:
    (n,) = con.execute("SELECT count(*) FROM ticket_comments").fetchone()
    con.execute("INSERT INTO ticket_comments VALUES (?, ?, ?, ?, ?, 0)",
                (f"m{n:07d}", ticket_id, author, f"{author} wrote about {rng.choice(SUBJECTS)}", _ts(now)))


def _pick(con: sqlite3.Connection, rng: random.Random, sql: str) -> str | None:
    ids = [row[0] for row in con.execute(sql)]
    return rng.choice(ids) if ids else None


def _step(con: sqlite3.Connection, rng: random.Random, now: datetime) -> None:
    """One simulated minute: a few tickets opened, moved on or closed, a customer perhaps changing plan."""
    for _ in range(rng.randrange(1, 3)):
        _open_ticket(con, rng, now)
    for _ in range(rng.randrange(1, 4)):
        ticket = _pick(con, rng, "SELECT ticket_id FROM tickets WHERE is_deleted = 0 AND status != 'closed' "
                                 "ORDER BY ticket_id")
        if ticket is None:
            break
        status = rng.choice(STATUSES)
        con.execute("UPDATE tickets SET status = ?, priority = ?, updated_at = ?, "
                    "closed_at = CASE WHEN ? = 'closed' THEN ? ELSE NULL END WHERE ticket_id = ?",
                    (status, rng.choice(PRIORITIES), _ts(now), status, _ts(now), ticket))
        _comment(con, rng, ticket, now, "agent")
    if rng.random() < 0.5:
        customer = _pick(con, rng, "SELECT customer_id FROM customers WHERE is_deleted = 0 ORDER BY customer_id")
        if customer is not None:
            con.execute("UPDATE customers SET plan = ?, updated_at = ? WHERE customer_id = ?",
                        (rng.choice(PLANS), _ts(now), customer))
    if rng.random() < 0.1:
        ticket = _pick(con, rng, "SELECT ticket_id FROM tickets WHERE is_deleted = 0 AND status = 'closed' "
                                 "ORDER BY ticket_id")
        if ticket is not None:  # reported as a soft delete: a load on updated_at sees it
            con.execute("UPDATE tickets SET is_deleted = 1, updated_at = ? WHERE ticket_id = ?", (_ts(now), ticket))


def comments_page(path: Path, updated_since: datetime | None, page: int, per_page: int) -> dict[str, object]:
    """One page of the ticket comments changed at or after ``updated_since`` (oldest first), as the API serves it."""
    since = _ts(updated_since) if updated_since is not None else ""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT comment_id, ticket_id, author, body, updated_at, is_deleted FROM ticket_comments "
            "WHERE updated_at >= ? ORDER BY updated_at, comment_id LIMIT ? OFFSET ?",
            (since, per_page + 1, (page - 1) * per_page)).fetchall()
    con.close()
    data = [{"comment_id": c, "ticket_id": t, "author": a, "body": b,
             "updated_at": datetime.fromisoformat(u).replace(tzinfo=UTC).isoformat(), "is_deleted": d}
            for c, t, a, b, u, d in rows[:per_page]]
    return {"data": data, "page": page, "next_page": page + 1 if len(rows) > per_page else None}


class _Handler(BaseHTTPRequestHandler):
    database: Path

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        url = urlsplit(self.path)
        if url.path != API_PATH:
            return self._answer(404, {"error": f"no such endpoint {url.path}; the API serves {API_PATH}"})
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            since = datetime.fromisoformat(query["updated_since"]) if query.get("updated_since") else None
            page, per_page = int(query.get("page", "1")), int(query.get("per_page", "100"))
            if since is not None and since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
            if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
                raise ValueError("page >= 1 and 1 <= per_page <= 500")
        except ValueError as exc:
            return self._answer(400, {"error": f"bad query: {exc}"})
        self._answer(200, comments_page(self.database, since, page, per_page))

    def _answer(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # one line per request would bury the platform's own log


def serve(path: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve the read-only helpdesk API over the database at ``path`` from a background thread.

    Returns the server (``server_address`` has the port; ``shutdown()`` stops it).
    """
    handler = type("HelpdeskApi", (_Handler,), {"database": path})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="helpdesk-api", daemon=True).start()
    return server
