"""Test fixtures: an isolated environment, and a real S3-compatible server on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from agentlake.config import S3Settings
from agentlake.storage.store import ObjectStore

S3_KEY = "agentlake-test"
S3_SECRET = "agentlake-test-secret"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's own AgentLake or AWS settings, nor write into the work tree."""
    for name in list(os.environ):
        if name.startswith(("AGENTLAKE_", "AWS_")) or name == "DAGSTER_HOME":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AGENTLAKE_HOME", str(tmp_path / "home"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _reset_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback for the whole session, stopped with SIGKILL at the end."""
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_reset_signals,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_settings(s3_endpoint: str) -> S3Settings:
    """A fresh, empty bucket on the loopback S3 server."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return S3Settings(bucket=bucket, prefix="agentlake", endpoint=s3_endpoint, access_key_id=S3_KEY,
                      secret_access_key=S3_SECRET)


@pytest.fixture(params=["local", "s3"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """How to open the store under test, picklable for producer processes: a folder, or S3."""
    if request.param == "local":
        return {"kind": "local", "root": str(tmp_path / "store")}
    s3: S3Settings = request.getfixturevalue("s3_settings")
    return {"kind": "s3", "s3": s3}


def open_store(spec: dict[str, object]) -> ObjectStore:
    if spec["kind"] == "local":
        return ObjectStore.local(Path(str(spec["root"])))
    s3 = spec["s3"]
    assert isinstance(s3, S3Settings)
    return ObjectStore.s3(s3)


@pytest.fixture
def store(store_spec: dict[str, object]) -> ObjectStore:
    return open_store(store_spec)


@pytest.fixture(scope="module")
def browser_path() -> str:
    """Debian's Chromium for the browser tests: required in CI, skipped where it is not installed."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(candidate):
            return candidate
    return None


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl): on the PATH, else Debian's newest."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                        if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


class PostgresServer:
    """A throwaway PostgreSQL server on loopback: a login role with a password, a new database per call."""

    user = "agentlake"
    password = "pg-CANARY-3c9e71"  # must never be printed back by AgentLake

    def __init__(self, port: int, socket_dir: Path) -> None:
        self.port = port
        self._socket_dir = socket_dir
        self._created = 0

    def admin(self, statement: str) -> None:
        """Run one statement as the server's superuser, over its socket (trusted there, never over TCP)."""
        import psycopg2

        conn = psycopg2.connect(host=str(self._socket_dir), port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def database(self) -> str:
        """A new empty database owned by the role; its SQLAlchemy URI, in the form the README shows."""
        self._created += 1
        name = f"lake{self._created}"
        self.admin(f"CREATE DATABASE {name} OWNER {self.user}")
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, in a temp folder, stopped and removed at the end.

    PostgreSQL refuses to run as root (as CI does), so then the server runs as the ``postgres`` user,
    owning its folder. Skipped only where no PostgreSQL programs exist; CI installs them (.ci/run).
    """
    import tempfile

    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing in CI: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed (apt-get install postgresql)")
    # Not under pytest's temp root: that is private to root, and the server's user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="agentlake-pg-"))
    as_server: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_server = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def server(*argv: str) -> None:
        subprocess.run([*as_server, str(bindir / argv[0]), *argv[1:]], check=True, capture_output=True, timeout=120)

    try:
        server("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
               "--encoding=UTF8", "--no-sync")
        # fsync off: a throwaway server; the catalog's commit protocol, not durability, is under test.
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        server("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
        pg = PostgresServer(port, root)
        pg.admin(f"CREATE ROLE {pg.user} LOGIN PASSWORD '{pg.password}'")
        yield pg
    finally:
        if data.exists():
            subprocess.run([*as_server, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
