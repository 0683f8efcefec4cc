"""Riding out an unreliable object store: which errors are transient, and how a stage backs off.

Retries happen in three layers, from the inside out:

1. Each request: obstore retries 5xx, SlowDown, resets and timeouts (and
   :meth:`ObjectStore.put_once` retries a conditional create, which obstore does not);
   pyarrow's S3 filesystem under pyiceberg retries its own requests
   (:class:`agentlake.storage.catalog.StoreRetryStrategy`).
2. Each stage (ingest of an arrival day, the facts): an error that outlasts those retries starts
   the stage again from the tables' ledgers, with exponential backoff, until the store has
   failed for ``AGENTLAKE_STORE_RETRY_S`` seconds without the stage getting anywhere; then
   :class:`StoreUnavailable`, naming the store and what to do.
3. Dagster: an ingest run that gives up is retried by the daemon (``dagster/max_retries``).

A stage's commit is atomic in the catalog and every attempt reads the ledgers afresh, so an
attempt cut short by the store leaves nothing visible and the next one doubles nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from obstore.exceptions import GenericError

from agentlake.config import S3Settings, Settings
from agentlake.errors import CorruptSegment, StoreUnavailable

T = TypeVar("T")
_log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# A segment whose bytes miss its checksum is read again this many times (a damaged transfer)
# before it is reported as corrupt.
CORRUPT_REREADS = 2

# pyarrow reports every S3 failure as OSError; these codes never heal by waiting.
_PERMANENT_AWS_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "NO_SUCH_BUCKET",
                         "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the store misbehaving (5xx, SlowDown, timeout, reset), so trying again can cure it.

    obstore raises ``GenericError`` once its own retries are spent; pyarrow raises ``OSError``.
    Missing objects, refused credentials and write-once refusals are not transient.
    """
    if isinstance(exc, StoreUnavailable | GenericError):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_OS_ERRORS):
        return not any(code in str(exc) for code in _PERMANENT_AWS_ERRORS)
    return False


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


class StoreRetry:
    """Backoff between attempts of one stage while the object store fails.

    Call :meth:`failed` with each error: it returns after a backoff if the error is transient and
    the store has not been failing for longer than the budget, and raises otherwise. Call
    :meth:`progressed` when an attempt got somewhere (a commit landed): the budget starts over.

    Args:
        settings: the deployment (its store, and ``store_retry_s``, the budget in seconds).
        what: the stage, as it reads in "... while {what}".
    """

    def __init__(
        self,
        settings: Settings,
        what: str,
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.budget_s = settings.store_retry_s
        self.store = describe_store(settings)
        self.what = what
        self.retries = 0  # attempts started again because of the store
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
        if isinstance(exc, CorruptSegment):
            self._corrupt_reads += 1
            if self._corrupt_reads > CORRUPT_REREADS:
                raise exc
        elif not is_transient(exc):
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
        _log.warning("the object store (%s) failed while %s (%s); trying again in %.1fs (failing for %.0fs of %gs)",
                     self.store, self.what, _summary(exc), pause, failing_s, self.budget_s)
        self._sleep(pause)

    def progressed(self) -> None:
        """An attempt got somewhere: the store works again, so its failing time starts over."""
        self._failing_since = None
        self._backoff_s = self._first_backoff_s


def retrying(settings: Settings, what: str, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` until it succeeds, backing off while the object store fails (see :class:`StoreRetry`).

    Only for attempts that are safe to repeat (reads, or writes that check what is already there).
    """
    retry = StoreRetry(settings, what)
    while True:
        try:
            return attempt()
        except Exception as exc:  # classified by StoreRetry.failed: anything not transient is re-raised
            retry.failed(exc)


def _summary(exc: BaseException) -> str:
    """The error's first line, short: obstore appends pages of debug output."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
