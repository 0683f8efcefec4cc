"""One retry policy for every stage: what a failure is, and how long a stage keeps trying.

Every failure is one of four kinds (:func:`classify`, the one place foreign exceptions are sorted):

- a **commit conflict** (another writer committed first): the stage starts again at once, after
  a short random pause so that writers who collided do not collide again, up to
  :attr:`RetryPolicy.conflict_attempts` attempts; then :class:`~agentlake.errors.StageAborted`;
- a **transient** store failure (5xx, SlowDown, timeouts, resets, once the clients' own retries
  are spent): the stage backs off exponentially until the store has failed for
  ``AGENTLAKE_STORE_RETRY_S`` seconds without the stage getting anywhere; then
  :class:`~agentlake.errors.StoreUnavailable`, naming the store and what to do;
- a **corrupt** read (bytes that miss their checksum): read again a few times, then reported;
- anything else is **terminal** and raised at once.

Retries happen in three layers, from the inside out:

1. Each request: obstore retries 5xx, SlowDown, resets and timeouts (and
   :meth:`ObjectStore.put_once` retries a conditional create, which obstore does not);
   pyarrow's S3 filesystem under pyiceberg retries its own requests
   (:class:`agentlake.storage.catalog.StoreRetryStrategy`).
2. Each stage (ingest of an arrival day, the facts, a publish, maintenance): :class:`StageRetry`.
3. Dagster: an ingest run that gives up is retried by the daemon (``dagster/max_retries``).

A stage's commit is atomic in the catalog and every attempt reads the ledgers afresh, so an
attempt cut short leaves nothing visible and the next one doubles nothing. Every retry is
logged by one logger (``agentlake.retry``) in one shape: what, why, the error, the pause.
"""

from __future__ import annotations

import enum
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from obstore.exceptions import GenericError
from pyiceberg.exceptions import CommitFailedException, ValidationException

from agentlake.config import S3Settings, Settings
from agentlake.errors import (
    AgentLakeError,
    CommitConflict,
    CorruptSegment,
    StageAborted,
    StoreUnavailable,
    TerminalError,
    TransientError,
    redact_credentials,
)

T = TypeVar("T")
_log = logging.getLogger("agentlake.retry")


@dataclass(frozen=True)
class RetryPolicy:
    """Every number of the retry policy, in one place. The store's budget is ``Settings.store_retry_s``."""

    conflict_attempts: int = 20  # attempts of a stage whose commits conflict, before StageAborted
    conflict_pause_s: float = 0.05  # the random pause after the n-th conflict is at most n times this ...
    conflict_max_pause_s: float = 2.0  # ... and never more than this
    store_first_backoff_s: float = 0.5  # a stage's first pause while the store fails, doubling ...
    store_max_backoff_s: float = 8.0  # ... up to this
    write_first_backoff_s: float = 0.1  # a write-once put is one cheap request: it starts sooner ...
    write_max_backoff_s: float = 5.0  # ... and doubles up to this
    corrupt_rereads: int = 2  # a segment that misses its checksum is read again this many times
    upload_attempts: int = 8  # a producer's uploads of one segment (each put_once rides out the store first)


DEFAULT_POLICY = RetryPolicy()
# Kept for callers and tests that name the numbers.
FIRST_BACKOFF_S = DEFAULT_POLICY.store_first_backoff_s
MAX_BACKOFF_S = DEFAULT_POLICY.store_max_backoff_s
CORRUPT_REREADS = DEFAULT_POLICY.corrupt_rereads


class Failure(enum.Enum):
    """What kind of failure an exception is, which decides what a stage does next."""

    CONFLICT = "conflict"
    TRANSIENT = "transient"
    CORRUPT = "corrupt"
    TERMINAL = "terminal"


# pyarrow reports every S3 failure as OSError; these codes never heal by waiting.
_PERMANENT_AWS_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "NO_SUCH_BUCKET",
                         "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
# pyiceberg raises a plain ValueError when a concurrent commit took the sequence number first.
_SEQUENCE_CONFLICT = "Cannot add snapshot with sequence number"


def classify(exc: BaseException) -> Failure:
    """The kind of failure ``exc`` is: by type for AgentLake's errors, and for foreign ones the one boundary.

    Foreign exceptions: pyiceberg's ``CommitFailedException`` and ``ValidationException`` (a
    concurrent commit invalidated this one) and its sequence-number ``ValueError`` are conflicts;
    obstore's ``GenericError`` (raised once its own retries are spent) is transient, and so are
    botocore's (the Object Lock writes) 5xx, throttling, 409 and connection errors; pyarrow's
    ``OSError`` is transient unless it is a local file error or an AWS code that never heals
    (refused credentials, no such bucket).
    """
    if isinstance(exc, CorruptSegment):
        return Failure.CORRUPT
    if isinstance(exc, CommitConflict):
        return Failure.CONFLICT
    if isinstance(exc, TransientError):
        return Failure.TRANSIENT
    if isinstance(exc, TerminalError | AgentLakeError):
        return Failure.TERMINAL
    if isinstance(exc, CommitFailedException | ValidationException):
        return Failure.CONFLICT
    if isinstance(exc, ValueError) and str(exc).startswith(_SEQUENCE_CONFLICT):
        return Failure.CONFLICT
    if isinstance(exc, GenericError):
        return Failure.TRANSIENT
    if (aws := _botocore_failure(exc)) is not None:
        return aws
    if isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_OS_ERRORS):
        return Failure.TERMINAL if any(code in str(exc) for code in _PERMANENT_AWS_ERRORS) else Failure.TRANSIENT
    return Failure.TERMINAL


# S3 answers that heal by waiting (besides any 5xx); 409 is a conditional create racing another.
_TRANSIENT_AWS_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                        "ConditionalRequestConflict", "OperationAborted")


def _botocore_failure(exc: BaseException) -> Failure | None:
    """The kind of a botocore error, or None if ``exc`` is not one."""
    errors = sys.modules.get("botocore.exceptions")
    if errors is None:  # botocore never loaded (no Object Lock configured): exc cannot be one of its errors
        return None
    if isinstance(exc, errors.ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return Failure.TRANSIENT if status >= 500 or code in _TRANSIENT_AWS_CODES else Failure.TERMINAL
    if isinstance(exc, errors.ConnectionError | errors.HTTPClientError):
        return Failure.TRANSIENT
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the store misbehaving (5xx, SlowDown, timeout, reset), so waiting can cure it."""
    return classify(exc) is Failure.TRANSIENT


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a commit that lost to another writer's, so starting the stage again cures it."""
    return classify(exc) is Failure.CONFLICT


def describe_s3(s3: S3Settings) -> str:
    """The bucket and endpoint, for error messages (never credentials, even in the URL)."""
    endpoint = "AWS S3"
    if s3.endpoint:
        parts = urlsplit(s3.endpoint)
        endpoint = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return f"bucket {s3.bucket!r} at {endpoint}"


def describe_store(settings: Settings) -> str:
    """Where the deployment's object store is, for error messages."""
    if settings.s3 is not None:
        return describe_s3(settings.s3)
    return f"local folder {str(settings.store_root)!r}"


def log_retry(what: str, why: str, exc: BaseException, pause: float, progress: str, *,
              level: int = logging.WARNING) -> None:
    """The one shape of a retry's log line: what, why, the error, the pause and how far along."""
    _log.log(level, "%s: %s (%s); trying again in %.2fs (%s)", what, why, _summary(exc), pause, progress)


class StoreRetry:
    """Backoff between attempts of one stage while the object store fails.

    Call :meth:`failed` with each error: it returns after a backoff if the error is transient and
    the store has not been failing for longer than the budget, and raises otherwise. Call
    :meth:`progressed` when an attempt got somewhere (a commit landed): the budget starts over.

    Args:
        settings: the deployment (its store, and ``store_retry_s``, the budget in seconds).
        what: the stage, as it reads in "... while {what}".
        store / budget_s: instead of ``settings``, where the store is and the budget.
    """

    def __init__(
        self,
        settings: Settings | None,
        what: str,
        *,
        store: str | None = None,
        budget_s: float | None = None,
        first_backoff_s: float = DEFAULT_POLICY.store_first_backoff_s,
        max_backoff_s: float = DEFAULT_POLICY.store_max_backoff_s,
        policy: RetryPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings is not None:
            budget_s, store = settings.store_retry_s, describe_store(settings)
        assert budget_s is not None and store is not None, "StoreRetry needs settings, or a store and a budget"
        self.budget_s = budget_s
        self.store = store
        self.what = what
        self.retries = 0  # attempts started again because of the store
        self._policy = policy
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._backoff_s = first_backoff_s
        self._clock = clock
        self._sleep = sleep
        self._failing_since: float | None = None
        self._corrupt_reads = 0

    def failed(self, exc: BaseException) -> None:
        """Wait before the next attempt, or raise.

        Raises:
            StoreUnavailable: the store has failed for longer than ``AGENTLAKE_STORE_RETRY_S``.
            Exception: ``exc`` itself, when it is not the store misbehaving (nothing to wait for).
        """
        kind = classify(exc)
        if kind is Failure.CORRUPT:
            self._corrupt_reads += 1
            if self._corrupt_reads > self._policy.corrupt_rereads:
                raise exc
        elif kind is not Failure.TRANSIENT:
            raise exc
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        failing_s = now - self._failing_since
        if failing_s >= self.budget_s:
            raise StoreUnavailable(
                f"the object store ({self.store}) kept failing for {failing_s:.0f}s while {self.what} "
                f"(last error: {_summary(exc)}); check that the store is reachable and healthy, then run it "
                "again: it resumes where it stopped and never doubles a row. To wait longer before giving "
                f"up, raise AGENTLAKE_STORE_RETRY_S (now {self.budget_s:g})"
            ) from exc
        self.retries += 1
        pause = max(0.0, min(self._backoff_s * random.uniform(0.5, 1.0), self.budget_s - failing_s))
        self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)
        log_retry(self.what, f"the object store ({self.store}) failed", exc, pause,
                   f"failing for {failing_s:.0f}s of {self.budget_s:g}s")
        self._sleep(pause)

    def progressed(self) -> None:
        """An attempt got somewhere: the store works again, so its failing time starts over."""
        self._failing_since = None
        self._backoff_s = self._first_backoff_s


class StageRetry:
    """The one stage loop: run attempts until one succeeds, deciding after each failure by its kind.

    A conflict starts the stage again after a short random pause, up to ``policy.conflict_attempts``
    attempts, then raises ``aborted``; with ``settings``, a transient store failure is backed off
    (:class:`StoreRetry`); anything else is raised at once. Without ``settings`` the stage retries
    conflicts only (for stages whose attempt leaves files behind that a blind re-run would not reuse).

    Args:
        what: the stage, as it reads in "{what} conflicted ..." and "... while {what}".
        aborted: the error to raise when conflicts outlast the attempts (a :class:`StageAborted` by default).
    """

    def __init__(
        self,
        what: str,
        settings: Settings | None = None,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        aborted: Callable[[str], Exception] = StageAborted,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.what = what
        self.policy = policy
        self.attempts = 0  # attempts started, the first included
        self.conflicts = 0
        self._aborted = aborted
        self._sleep = sleep
        self._store = StoreRetry(settings, what, policy=policy, clock=clock, sleep=sleep) if settings else None

    @property
    def store_retries(self) -> int:
        """Attempts started again because the object store failed."""
        return self._store.retries if self._store else 0

    def failed(self, exc: BaseException) -> None:
        """Pause before the next attempt, or raise.

        Raises:
            StageAborted: (or ``aborted``) commits conflicted ``policy.conflict_attempts`` times.
            StoreUnavailable: the store failed for longer than ``AGENTLAKE_STORE_RETRY_S``.
            Exception: ``exc`` itself, when trying again cannot cure it.
        """
        kind = classify(exc)
        if kind is Failure.CONFLICT:
            self.conflicts += 1
            if self.conflicts >= self.policy.conflict_attempts:
                raise self._aborted(
                    f"{self.what} conflicted with other writers {self.conflicts} times; run it again"
                ) from exc
            ceiling = min(self.policy.conflict_max_pause_s, self.policy.conflict_pause_s * self.conflicts)
            pause = random.uniform(0.0, ceiling)
            # Conflicts are the normal price of concurrent writers: logged, but not as a warning.
            log_retry(self.what, "another writer committed first", exc, pause,
                      f"conflict {self.conflicts} of {self.policy.conflict_attempts}", level=logging.INFO)
            self._sleep(pause)
        elif self._store is not None:
            self._store.failed(exc)
        else:
            raise exc

    def progressed(self) -> None:
        """An attempt got somewhere (a commit landed): the store's failing time starts over."""
        if self._store is not None:
            self._store.progressed()

    def run(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until it returns; it must be safe to repeat (each attempt reads fresh state)."""
        while True:
            self.attempts += 1
            try:
                return attempt()
            except Exception as exc:  # sorted by failed(): what retrying cannot cure is re-raised
                self.failed(exc)


def retrying(settings: Settings, what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until it succeeds, backing off while the object store fails (see :class:`StageRetry`).

    Only for attempts that are safe to repeat (reads, or writes that check what is already there).
    """
    return StageRetry(what, settings).run(attempt)


def _summary(exc: BaseException) -> str:
    """The error's first line, short and without URL credentials: obstore appends pages of debug output,
    and quotes the endpoint it was given, user:password@ included."""
    text = redact_credentials(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
