"""AgentLake's exceptions: one class per failure, each message says what to do."""

from __future__ import annotations


class AgentLakeError(Exception):
    """Base class of every error AgentLake raises on purpose."""


class ConfigError(AgentLakeError):
    """The environment does not describe a usable deployment (missing or unknown setting)."""


class StoreError(AgentLakeError):
    """The object store failed in a way retries did not cure."""


class AlreadyExists(StoreError):
    """A write-once key already holds an object: log segments and artifacts are never overwritten."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"object {key!r} already exists and is write-once; write under a new key instead of overwriting"
        )
        self.key = key


class ObjectNotFound(StoreError):
    """The key names no object in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key!r}; list the log with `agentlake log ls` to see existing keys")
        self.key = key


class StoreUnavailable(StoreError):
    """The object store kept failing (5xx, SlowDown, timeouts, resets) for longer than retries wait."""


class SegmentConflict(StoreError):
    """A segment key exists with different bytes than the producer tried to write."""


class CorruptSegment(StoreError):
    """A segment's bytes do not match the checksum its key carries."""


class StageAborted(AgentLakeError):
    """A stage gave up after repeated commit conflicts; run it again (nothing was lost or doubled)."""


class OversizedSegment(CorruptSegment):
    """A segment inflates past the bound the reader holds in memory (a compressed bomb, or not the SDK's)."""


class InvalidSegmentKey(AgentLakeError):
    """An object under the log prefix does not have the shape of a segment key."""


class InvalidProducer(AgentLakeError):
    """A producer name the log cannot carry in its segment keys."""


class InvalidEvent(AgentLakeError):
    """An event failed validation; `reason` names the field and the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OtlpFormatError(AgentLakeError):
    """An OTLP/JSON file is not a trace export the OpenTelemetry Collector would write."""

    def __init__(self, message: str, *, file: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.reason = reason or message
