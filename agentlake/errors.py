"""AgentLake's exceptions: one class per failure, each message says what to do.

Whether trying again can cure a failure is a matter of its type, never of its message:
:class:`TransientError` (the store misbehaving: wait and try again), :class:`CommitConflict`
(another writer committed first: start the stage again from fresh table state) or
:class:`TerminalError` (nothing to wait for). Foreign exceptions (obstore, pyarrow, pyiceberg)
are sorted into the same three at one boundary, :func:`agentlake.storage.retry.classify`.
"""

from __future__ import annotations

import re

# The user:password@ part of any URL (an S3 endpoint, a catalog URI) inside a foreign library's message.
_URL_CREDENTIALS = re.compile(r"//[^\s/?#@]*(?:@[^\s/?#@]*)*@")


def redact_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it taken out (``scheme://***@host``).

    For foreign messages quoted in AgentLake's own: a driver or client may echo the address it was given.
    """
    return _URL_CREDENTIALS.sub("//***@", text)


class AgentLakeError(Exception):
    """Base class of every error AgentLake raises on purpose."""


class TransientError(Exception):
    """Mixin: a failure that can heal by itself (an outage, a timeout); the stage backs off and tries again."""


class TerminalError(Exception):
    """Mixin: a failure that waiting does not cure (a bad setting, a missing object, a refused write)."""


class CommitConflict(AgentLakeError):
    """Another writer committed first: the stage starts again from fresh table state."""


class ConfigError(TerminalError, AgentLakeError):
    """The environment does not describe a usable deployment (missing or unknown setting)."""


class CatalogUnavailable(TerminalError, AgentLakeError):
    """The Iceberg catalog's database could not be reached or refused the connection.

    Terminal: a stage does not wait for it as for the object store; the run fails and is retried as a whole.
    """


class StoreError(AgentLakeError):
    """The object store failed in a way retries did not cure."""


class AlreadyExists(TerminalError, StoreError):
    """A write-once key already holds an object: log segments and artifacts are never overwritten."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"object {key!r} already exists and is write-once; write under a new key instead of overwriting"
        )
        self.key = key


class ObjectNotFound(TerminalError, StoreError):
    """The key names no object in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key!r}; list the log with `agentlake log ls` to see existing keys")
        self.key = key


class StoreUnavailable(TransientError, StoreError):
    """The object store kept failing (5xx, SlowDown, timeouts, resets) for longer than retries wait."""


class SegmentConflict(TerminalError, StoreError):
    """A segment key exists with different bytes than the producer tried to write."""


class BadSegment(StoreError):
    """An object in the log that cannot be ingested as it is; ``key`` names it.

    Ingestion holds such a segment as a whole (its key, size and reason in ``raw.quarantine``,
    its bytes left in the log) and goes on with the others; reconciliation names it.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CorruptSegment(BadSegment):
    """A segment's bytes do not match the checksum its key carries.

    Neither transient nor terminal: a damaged transfer is read again a few times
    (:attr:`agentlake.storage.retry.RetryPolicy.corrupt_rereads`), then reported.
    """


class SegmentMismatch(TerminalError, BadSegment):
    """A segment's content disagrees with what its key claims (its line count)."""


class ForgedSegment(TerminalError, BadSegment):
    """With a signing key set, a segment whose key carries no signature, or one that does not match its
    key and content: AgentLake's log writer did not write it."""


class UntrustedRecord(TerminalError, AgentLakeError):
    """With a signing key set, a record in the store (an audit record, a validation result) that does not
    prove it is AgentLake's: it is named, never relied on; ``key`` names it."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class StageAborted(TerminalError, AgentLakeError):
    """A stage gave up after repeated commit conflicts; run it again (nothing was lost or doubled).

    Terminal for the stage that raised it: its own retries are spent, so an enclosing loop does not
    start it again (the run as a whole can be retried, by a person or by Dagster).
    """


class OversizedSegment(TerminalError, BadSegment):
    """A segment inflates past the bound the reader holds in memory (a compressed bomb, or not the SDK's)."""


class InvalidSegmentKey(TerminalError, AgentLakeError):
    """An object under the log prefix does not have the shape of a segment key."""


class InvalidProducer(TerminalError, AgentLakeError):
    """A producer name the log cannot carry in its segment keys."""


class InvalidEvent(TerminalError, AgentLakeError):
    """An event failed validation; `reason` names the field and the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OtlpFormatError(TerminalError, AgentLakeError):
    """An OTLP/JSON file is not a trace export the OpenTelemetry Collector would write."""

    def __init__(self, message: str, *, file: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason or message
