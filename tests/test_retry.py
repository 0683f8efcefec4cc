"""The one retry policy: how a stage retries conflicts and backs off while the store fails, and which errors are which."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.io.pyarrow import _import_retry_strategy

from agentlake.config import S3Settings, Settings
from agentlake.errors import (
    AgentLakeError,
    ConfigError,
    CorruptSegment,
    ObjectNotFound,
    StageAborted,
    StoreUnavailable,
    TerminalError,
    TransientError,
)
from agentlake.gate.publish import AlreadyPublished, MainMoved
from agentlake.storage.catalog import S3_MAX_ATTEMPTS, StoreRetryStrategy, catalog_properties
from agentlake.storage.retry import (
    CORRUPT_REREADS,
    Failure,
    RetryPolicy,
    StageRetry,
    StoreRetry,
    classify,
    describe_s3,
    is_transient,
    retrying,
)
from agentlake.tables.ledger import LedgerCorrupt

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


def outcomes(*results: object, then: BaseException | None = None, calls: list[int] | None = None) -> Callable[[], object]:
    """An attempt that raises or returns each of ``results`` in turn, then raises ``then`` for ever."""
    queue = iter(results)

    def attempt() -> object:
        if calls is not None:
            calls.append(len(calls) + 1)
        outcome = next(queue, then)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt


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
    attempt = outcomes(GenericError("reset"), OSError("AWS Error NETWORK_CONNECTION"), "listed")
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


# --- the one policy: conflicts, outages and terminal errors, decided by type ---------------------


class StaleHandle(CommitFailedException):
    pass


def test_a_conflict_is_retried_with_short_pauses_then_aborts_the_stage_after_the_attempts() -> None:
    t = FakeTime()
    policy = RetryPolicy(conflict_attempts=4)
    stage = StageRetry("ingesting arrival day 2026-11-20", policy=policy, clock=t.clock, sleep=t.sleep)
    calls: list[int] = []
    with pytest.raises(StageAborted) as aborted:
        stage.run(outcomes(then=StaleHandle("Requirement failed: branch main has changed"), calls=calls))
    assert calls == [1, 2, 3, 4] and stage.conflicts == 4
    assert len(t.sleeps) == 3 and all(0.0 <= s <= policy.conflict_pause_s * 3 for s in t.sleeps)
    assert "2026-11-20 conflicted with other writers 4 times; run it again" in str(aborted.value)
    assert isinstance(aborted.value, AgentLakeError) and isinstance(aborted.value.__cause__, StaleHandle)


def test_a_conflict_that_clears_returns_the_result_and_counts_the_attempts() -> None:
    t = FakeTime()
    stage = StageRetry("x", clock=t.clock, sleep=t.sleep)
    attempt = outcomes(ValidationException("files were removed meanwhile"),
                       ValueError("Cannot add snapshot with sequence number 7 older than last sequence number 7"),
                       "committed")
    assert stage.run(attempt) == "committed"
    assert stage.attempts == 3 and stage.conflicts == 2 and stage.store_retries == 0


def test_a_transient_store_error_backs_off_exponentially_then_gives_up_after_the_budget(tmp_path: Path) -> None:
    t = FakeTime()
    stage = StageRetry("deriving the facts of 2026-11-20", settings(tmp_path, budget=30.0), clock=t.clock,
                       sleep=t.sleep)
    tries: list[int] = []
    slow_down = OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.")
    with pytest.raises(StoreUnavailable) as gave_up:
        stage.run(outcomes(then=slow_down, calls=tries))
    assert t.now >= 30.0 and stage.store_retries == len(t.sleeps) == len(tries) - 1 >= 4
    assert t.sleeps[0] <= RetryPolicy().store_first_backoff_s
    assert t.sleeps[3] > t.sleeps[0]  # the pauses grow (each within half to all of a doubling backoff)
    assert max(t.sleeps) <= RetryPolicy().store_max_backoff_s
    assert "while deriving the facts of 2026-11-20" in str(gave_up.value)
    assert "AGENTLAKE_STORE_RETRY_S (now 30)" in str(gave_up.value)


def test_a_store_outage_is_not_retried_by_a_stage_that_retries_conflicts_only() -> None:
    t = FakeTime()
    stage = StageRetry("compaction of raw.events", clock=t.clock, sleep=t.sleep)
    with pytest.raises(GenericError):
        stage.run(outcomes(then=GenericError("Generic S3 error: error sending request")))
    assert stage.attempts == 1 and t.sleeps == []


@pytest.mark.parametrize("error", [
    ConfigError("AGENTLAKE_STORE=s4 is not a store; use local or s3"),
    LedgerCorrupt("segment log/v1/x partly overlaps the ledger"),
    ValueError("a bug"),
    PermissionDeniedError("denied"),
])
def test_a_terminal_error_is_raised_at_once_without_a_pause(tmp_path: Path, error: Exception) -> None:
    t = FakeTime()
    stage = StageRetry("x", settings(tmp_path), clock=t.clock, sleep=t.sleep)
    with pytest.raises(type(error)) as raised:
        stage.run(outcomes(then=error))
    assert raised.value is error and stage.attempts == 1 and t.sleeps == [] and stage.store_retries == 0


class DeadlineMissed(TerminalError, OSError):
    """A terminal type that also happens to be an OSError (as a client library's might)."""


@pytest.mark.parametrize(("error", "kind"), [
    (ConfigError("connection timeout: AGENTLAKE_S3_ENDPOINT is unreachable"), Failure.TERMINAL),
    (DeadlineMissed("timeout: reset by peer"), Failure.TERMINAL),
    (ObjectNotFound("log/v1/timeout"), Failure.TERMINAL),
    (StageAborted("ingesting conflicted 20 times"), Failure.TERMINAL),
    (StoreUnavailable("kept failing"), Failure.TRANSIENT),
    (CorruptSegment("checksum"), Failure.CORRUPT),
    (MainMoved("main moved while the batch was audited"), Failure.CONFLICT),
    (AlreadyPublished("another writer published these segments first"), Failure.CONFLICT),
    (CommitFailedException("Requirement failed: branch main has changed"), Failure.CONFLICT),
    (ValueError("Cannot add snapshot with sequence number 3 older than last sequence number 3"), Failure.CONFLICT),
    (ValueError("timeout"), Failure.TERMINAL),
    (OSError("AWS Error NETWORK_CONNECTION during GetObject operation"), Failure.TRANSIENT),
])
def test_the_kind_of_a_failure_is_decided_by_its_type_not_its_message(error: BaseException, kind: Failure) -> None:
    assert classify(error) is kind
    assert is_transient(error) is (kind is Failure.TRANSIENT)


def test_every_error_agentlake_defines_derives_from_its_base_error() -> None:
    assert issubclass(LedgerCorrupt, AgentLakeError) and issubclass(AlreadyPublished, AgentLakeError)
    assert issubclass(MainMoved, AgentLakeError) and issubclass(MainMoved, CommitFailedException)
    assert issubclass(StageAborted, AgentLakeError) and issubclass(StoreUnavailable, TransientError)
