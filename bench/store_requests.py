"""Object-store requests: what writing the log, ingest, the facts stage and context assembly ask of S3.

    python bench/store_requests.py            # 1,000,000 events, 40 contexts assembled
    python bench/store_requests.py --quick    # 50,000 events, 10 contexts (a smoke test)

The lake runs with ``AGENTLAKE_STORE=s3`` against a moto S3 server on loopback, through a counting
HTTP proxy on loopback: every request the product makes passes through it and is counted by S3's
billing class, phase by phase. The bucket itself is made directly against the server (not counted).

- PUT class: PUT, POST (multipart upload parts and completion, DeleteObjects), COPY; LIST (a GET on
  the bucket: ListObjectsV2) is billed at the same price and counted on its own.
- GET class: GET of an object, HEAD.
- DELETE: free on S3, counted for completeness.

Priced at S3 Standard's public request prices (us-east-1): PUT, COPY, POST, LIST $0.005 per
1,000 requests; GET, HEAD $0.0004 per 1,000 (storage and transfer not included). The catalog is
the lake's SQL catalog on the local disk, as in the default deployment: its requests are not
object-store requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# US dollars per 1,000 requests, S3 Standard, us-east-1.
PRICE_PER_1000 = {"PUT": 0.005, "LIST": 0.005, "GET": 0.0004, "HEAD": 0.0004, "DELETE": 0.0}
KEY, SECRET = "agentlake-bench", "agentlake-bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_class(method: str, target: str) -> str:
    """S3's billing class of one request, from its method and target (path-style: /bucket/key?query)."""
    parts = urlsplit(target)
    has_key = "/" in parts.path.strip("/")
    if method == "HEAD":
        return "HEAD"
    if method == "GET":
        return "GET" if has_key else "LIST"
    if method == "DELETE":
        return "DELETE"
    return "PUT"  # PUT, POST (multipart, DeleteObjects), COPY


class CountingProxy:
    """A loopback HTTP proxy in front of the S3 server that counts each request by billing class."""

    def __init__(self, upstream_port: int) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(body)
                        body += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _forward(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.counts[request_class(self.command, self.path)] += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for name, value in resp.getheaders():
                        if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                            self.send_header(name, value)
                    # A HEAD's Content-Length is the object's size: pass it on, send no body.
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self) -> dict[str, int]:
        """The counts since the last call, and start counting afresh."""
        with self._lock:
            counts, self.counts = dict(self.counts), Counter()
        return {name: counts.get(name, 0) for name in PRICE_PER_1000}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cost(counts: dict[str, int]) -> float:
    return sum(counts[name] * PRICE_PER_1000[name] / 1000 for name in PRICE_PER_1000)


def _reset_signals() -> None:
    # A server started from a shell that ignores SIGINT/SIGTERM would inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_moto(port: int) -> subprocess.Popen[bytes]:
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_reset_signals)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the moto S3 server did not start within 30 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int)
    parser.add_argument("--contexts", type=int)
    args = parser.parse_args()
    events = args.events or (50_000 if args.quick else 1_000_000)
    contexts = args.contexts or (10 if args.quick else 40)

    import boto3

    from agentlake.config import Settings
    from agentlake.context.assembly import ContextEngine, ContextRequest, assemble
    from agentlake.log.writer import LogWriter
    from agentlake.pipeline.facts import update_facts
    from agentlake.pipeline.ingest import ingest
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.sources.demo import FleetConfig, generate_runs
    from agentlake.tables.lake import Lake

    moto_port = free_port()
    moto = start_moto(moto_port)
    proxy = CountingProxy(moto_port)
    work = Path(tempfile.mkdtemp(prefix="agentlake-bench-requests-"))
    phases: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    try:
        bucket = "agentlake-bench"
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", aws_access_key_id=KEY,
                     aws_secret_access_key=SECRET, region_name="us-east-1").create_bucket(Bucket=bucket)
        settings = Settings.from_env({
            "AGENTLAKE_HOME": str(work / "home"), "AGENTLAKE_STORE": "s3", "AGENTLAKE_S3_BUCKET": bucket,
            "AGENTLAKE_S3_PREFIX": "agentlake", "AGENTLAKE_S3_ENDPOINT": proxy.endpoint,
            "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
        })
        lake = Lake(settings)
        _ = lake.catalog
        proxy.take()  # creating the tables is a one-off

        started = time.perf_counter()
        base = list(generate_runs(FleetConfig(seed=11), 4000, datetime.now(UTC)))
        writer = LogWriter(lake.store, "bench", background_flush=False)  # the SDK's default segment size
        written = copy = 0
        while written < events:
            prefix = f"c{copy:04d}-".encode()
            for line in base[: events - written]:
                writer.append_line(line.replace(b'"event_id":"', b'"event_id":"' + prefix)
                                   .replace(b'"run_id":"', b'"run_id":"' + prefix))
                written += 1
            copy += 1
        writer.close()
        seconds["log write"] = time.perf_counter() - started
        phases["log write"] = proxy.take()

        started = time.perf_counter()
        segments = lake.log.list_all()
        report = ingest(lake, segments, IngestOptions())
        seconds["ingest"] = time.perf_counter() - started
        phases["ingest"] = proxy.take()

        started = time.perf_counter()
        update_facts(lake, segments[0].dt)
        seconds["facts"] = time.perf_counter() - started
        phases["facts"] = proxy.take()

        runs = sorted(lake.table("facts.agent_runs").scan(selected_fields=("run_id",)).to_arrow().column(0).to_pylist())
        chosen = random.Random(7).sample(runs, min(contexts, len(runs)))
        proxy.take()
        engine = ContextEngine(lake)
        agent_log = LogWriter(lake.store, "benchagent", background_flush=False)
        started = time.perf_counter()
        for run_id in chosen:
            request = ContextRequest.from_spec({"sources": [
                {"name": "history", "table": "raw.events", "where": [["run_id", "=", run_id]], "order_by": ["ts"]},
                {"name": "documents", "table": "facts.retrievals", "where": [["run_id", "=", run_id]],
                 "order_by": ["document_rank"]},
            ]})
            assemble(lake, request, run_id=run_id, agent_id="bench", engine=engine, log=agent_log)
        agent_log.close()
        seconds["assembly"] = time.perf_counter() - started
        phases["assembly"] = proxy.take()
    finally:
        proxy.close()
        moto.kill()
        moto.wait()
        shutil.rmtree(work, ignore_errors=True)

    mode = "quick" if args.quick else "full"
    print(f"store_requests bench ({mode}): {events:,} events in {len(segments)} segments ({report.rows:,} rows ingested), "
          f"{len(chosen)} contexts assembled, S3 API on loopback (moto) through a counting proxy")
    print("prices, $ per 1,000 requests: " + ", ".join(f"{k} {v}" for k, v in PRICE_PER_1000.items()))
    print(f"{'phase':<12}{'PUT':>8}{'GET':>8}{'LIST':>7}{'HEAD':>7}{'DELETE':>8}{'$':>10}{'seconds':>9}")
    for name, counts in phases.items():
        print(f"{name:<12}{counts['PUT']:>8,}{counts['GET']:>8,}{counts['LIST']:>7,}{counts['HEAD']:>7,}"
              f"{counts['DELETE']:>8,}{cost(counts):>10.5f}{seconds[name]:>9.2f}")
    per_context = {k: v / max(1, len(chosen)) for k, v in phases["assembly"].items()}
    per_million = 1_000_000 / events
    figures: dict[str, object] = {
        "mode": mode, "events": events, "segments": len(segments), "contexts": len(chosen),
        "requests": phases, "usd": {name: round(cost(c), 6) for name, c in phases.items()},
        "ingest_usd_per_million_events": round(cost(phases["ingest"]) * per_million, 5),
        "ingest_requests_per_segment": round(sum(phases["ingest"].values()) / len(segments), 2),
        "assembly_requests_per_context": round(sum(per_context.values()), 2),
        "assembly_usd_per_1000_contexts": round(cost(phases["assembly"]) / max(1, len(chosen)) * 1000, 5),
        "prices_per_1000": PRICE_PER_1000, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "cores": os.cpu_count(),
    }
    print(f"ingest: {figures['ingest_requests_per_segment']} requests a segment, "
          f"${figures['ingest_usd_per_million_events']} per 1,000,000 events; assembly: "
          f"{figures['assembly_requests_per_context']} requests a context, "
          f"${figures['assembly_usd_per_1000_contexts']} per 1,000 contexts")
    print(json.dumps({"bench": "store_requests", "figures": figures, "ratios": {}, "goals": {}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
