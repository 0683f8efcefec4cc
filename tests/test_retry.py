"""How a stage backs off while the object store fails, and which errors count as the store failing."""

from __future__ import annotations

from pathlib import Path

import pytest
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError
from pyiceberg.io.pyarrow import _import_retry_strategy

from agentlake.config import S3Settings, Settings
from agentlake.errors import ConfigError, CorruptSegment, ObjectNotFound, StoreUnavailable
from agentlake.storage.catalog import S3_MAX_ATTEMPTS, StoreRetryStrategy, catalog_properties
from agentlake.storage.retry import CORRUPT_REREADS, StoreRetry, describe_s3, is_transient, retrying

pytestmark = pytest.mark.unit

S3 = S3Settings(bucket="lake", endpoint="http://user:pw@127.0.0.1:9000", access_key_id="AKIA", secret_access_key="hush")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def settings(tmp_path: Path, budget: float = 60.0) -> Settings:
    return Settings(home=tmp_path, store="s3", s3=S3, store_retry_s=budget)


@pytest.mark.parametrize(("error", "transient"), [
    (GenericError("Generic S3 error: HTTP error: error sending request"), True),
    (OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 56"), True),
    (OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."), True),
    (TimeoutError("timed out"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (StoreUnavailable("gave up writing a segment"), True),
    (OSError("AWS Error ACCESS_DENIED during HeadObject operation"), False),
    (FileNotFoundError("no metadata.json"), False),
    (PermissionError("denied"), False),
    (NotFoundError("missing"), False),
    (PermissionDeniedError("denied"), False),
    (ObjectNotFound("log/v1/x"), False),
    (ValueError("a bug"), False),
])
def test_which_errors_are_the_store_failing(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_backoff_grows_then_gives_up_naming_the_store(tmp_path: Path) -> None:
    t = FakeTime()
    retry = StoreRetry(settings(tmp_path, budget=20.0), "ingesting arrival day 2026-11-20", clock=t.clock,
                       sleep=t.sleep)
    with pytest.raises(StoreUnavailable) as gave_up:
        while True:
            retry.failed(GenericError("Generic S3 error: error sending request\n\nDebug source: pages of it"))
    assert t.now >= 20.0 and retry.retries == len(t.sleeps) >= 4
    growing = t.sleeps[:-1]  # the last pause is cut to what is left of the budget
    assert all(later >= earlier / 2 for earlier, later in zip(growing, growing[1:], strict=False))
    assert max(t.sleeps) <= 8.0
    message = str(gave_up.value)
    assert "bucket 'lake' at http://127.0.0.1:9000" in message and "2026-11-20" in message
    assert "AGENTLAKE_STORE_RETRY_S (now 20)" in message and "run it again" in message
    assert "Debug source" not in message and "hush" not in message and "pw" not in message
    assert isinstance(gave_up.value.__cause__, GenericError)


def test_progress_restarts_the_budget_and_other_errors_pass_through(tmp_path: Path) -> None:
    t = FakeTime()
    retry = StoreRetry(settings(tmp_path, budget=10.0), "x", clock=t.clock, sleep=t.sleep)
    for _ in range(30):  # 30 failures, each after progress: never gives up
        retry.failed(OSError("AWS Error NETWORK_CONNECTION"))
        t.now += 9.0
        retry.progressed()
    with pytest.raises(ValueError, match="a bug"):
        retry.failed(ValueError("a bug"))
    for _ in range(CORRUPT_REREADS):  # a corrupt read is read again a few times, then reported
        retry.failed(CorruptSegment("checksum"))
    with pytest.raises(CorruptSegment):
        retry.failed(CorruptSegment("checksum"))


def test_retrying_returns_once_the_store_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agentlake.storage.retry.time.sleep", lambda _s: None)
    calls = iter([GenericError("reset"), OSError("AWS Error NETWORK_CONNECTION"), "listed"])

    def attempt() -> str:
        outcome = next(calls)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert retrying(settings(tmp_path), "listing the log", attempt) == "listed"


def test_store_retry_budget_is_configured_in_the_environment(tmp_path: Path) -> None:
    assert Settings.from_env({"AGENTLAKE_HOME": str(tmp_path)}).store_retry_s == 300.0
    assert Settings.from_env({"AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE_RETRY_S": "45"}).store_retry_s == 45.0
    with pytest.raises(ConfigError, match="AGENTLAKE_STORE_RETRY_S"):
        Settings.from_env({"AGENTLAKE_HOME": str(tmp_path), "AGENTLAKE_STORE_RETRY_S": "soon"})


def test_pyiceberg_fileio_gets_the_retry_strategy_and_timeouts(tmp_path: Path) -> None:
    props = catalog_properties(settings(tmp_path))
    strategy = _import_retry_strategy(props["s3.retry-strategy-impl"])
    assert isinstance(strategy, StoreRetryStrategy) and strategy.max_attempts == S3_MAX_ATTEMPTS
    assert float(props["s3.connect-timeout"]) > 0 and float(props["s3.request-timeout"]) > 2.0
    assert describe_s3(S3) == "bucket 'lake' at http://127.0.0.1:9000"
