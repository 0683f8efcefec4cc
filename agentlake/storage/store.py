"""One object-store interface over a local folder and any S3-compatible endpoint.

Segments and artifacts are written once: :meth:`ObjectStore.put_once` asks the store itself
to refuse a second write to the same key (a conditional put, ``If-None-Match: *`` on S3),
so two writers can never overwrite each other, even across machines.

On S3 every request is retried with backoff on 5xx, SlowDown, timeouts and resets (obstore's
retry, bounded by ``retry_timeout_s``); a conditional create, which obstore does not retry once
it may have reached the server, is retried here, and a retry that finds the very bytes it was
writing already there has succeeded (the first attempt landed, its response was lost).

With ``AGENTLAKE_S3_OBJECT_LOCK_DAYS`` set, the write-once puts under the log, artifact and audit
prefixes are created under S3 Object Lock in compliance mode (:mod:`agentlake.storage.objectlock`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError
from obstore.store import LocalStore, S3Store

from agentlake.config import S3Settings, Settings, setting_default
from agentlake.errors import AlreadyExists, ConfigError, ObjectNotFound
from agentlake.storage.objectlock import ObjectExists, ObjectLock
from agentlake.storage.retry import DEFAULT_POLICY, StoreRetry, describe_s3

# How long one request is retried when no S3 settings say (a local store): the declared default.
S3_MAX_RETRY_TIMEOUT_S: float = setting_default("max_retry_timeout_s")


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store's root), size and modification time."""

    key: str
    size: int
    last_modified: datetime | None = None


class ObjectStore:
    """Write-once puts, reads, streaming reads and sorted listings over obstore."""

    def __init__(
        self, inner: Any, *, uri_base: str, sorts_listings: bool, where: str | None = None,
        retry_timeout_s: float = S3_MAX_RETRY_TIMEOUT_S, lock: ObjectLock | None = None,
    ) -> None:
        self._inner = inner
        self.lock = lock  # Object Lock for the write-once prefixes, if configured (S3 only)
        self._uri_base = uri_base.rstrip("/")
        # S3 lists in key order; a local folder does not, so the client sorts.
        self._sorts_listings = sorts_listings
        self.where = where or self._uri_base  # for error messages: never holds credentials
        self._retry_timeout_s = retry_timeout_s

    @classmethod
    def local(cls, root: Path) -> ObjectStore:
        """A folder on this machine acting as the object store (the embedded default)."""
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(LocalStore(root, mkdir=True), uri_base=root.as_uri(), sorts_listings=False)

    @classmethod
    def s3(
        cls, s3: S3Settings, *, max_retries: int | None = None, retry_timeout_s: float | None = None,
        request_timeout_s: float | None = None,
    ) -> ObjectStore:
        """A bucket on S3 or any S3-compatible server (credentials passed in, never logged).

        Args:
            max_retries / retry_timeout_s: how often and for how long one request is retried
                (default: ``s3.max_retries`` / ``s3.max_retry_timeout_s``).
            request_timeout_s: a request not answered within this time is abandoned and retried
                (default: ``s3.request_timeout_s``).
        """
        max_retries = s3.max_retries if max_retries is None else max_retries
        retry_timeout_s = s3.max_retry_timeout_s if retry_timeout_s is None else retry_timeout_s
        request_timeout_s = s3.request_timeout_s if request_timeout_s is None else request_timeout_s
        config: dict[str, Any] = {"region": s3.region}
        if s3.endpoint:
            config["endpoint"] = s3.endpoint
            # S3-compatible servers are usually addressed by path, not virtual host.
            config["virtual_hosted_style_request"] = False
        # The secrets are unwrapped here only, for the client that needs them.
        if s3.access_key_id:
            config["access_key_id"] = s3.access_key_id.get_secret_value()
        if s3.secret_access_key:
            config["secret_access_key"] = s3.secret_access_key.get_secret_value()
        if s3.session_token:
            config["session_token"] = s3.session_token.get_secret_value()
        client: dict[str, Any] = {
            "allow_http": bool(s3.endpoint and s3.endpoint.startswith("http://")),
            "connect_timeout": _seconds(s3.connect_timeout_s),
            "timeout": _seconds(request_timeout_s),
        }
        retry: dict[str, Any] = {
            "max_retries": max_retries,
            "retry_timeout": _seconds(retry_timeout_s),
            "backoff": {"init_backoff": _seconds(0.1), "max_backoff": _seconds(5.0), "base": 2},
        }
        inner = S3Store(
            s3.bucket,
            prefix=s3.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )
        base = f"s3://{s3.bucket}/{s3.prefix}" if s3.prefix else f"s3://{s3.bucket}"
        lock = None
        if s3.object_lock_days is not None:
            lock = ObjectLock(s3, s3.object_lock_days, max_retries=max_retries, connect_timeout_s=s3.connect_timeout_s,
                              request_timeout_s=request_timeout_s)
            lock.check_bucket()  # one request when the store is opened: never write "locked" into an unlockable bucket
        return cls(inner, uri_base=base, sorts_listings=True, where=describe_s3(s3), retry_timeout_s=retry_timeout_s,
                   lock=lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        if settings.s3 is not None:
            # One request never retries for longer than a whole stage would wait for the store.
            budget = min(settings.s3.max_retry_timeout_s, max(1.0, settings.store_retry_s))
            return cls.s3(settings.s3, retry_timeout_s=budget)
        try:
            return cls.local(settings.store_root)
        except (FileExistsError, NotADirectoryError, PermissionError) as exc:
            raise ConfigError(
                f"cannot keep the local store in {settings.store_root}: {exc.strerror}; set AGENTLAKE_HOME to a "
                "folder this user can write"
            ) from None

    def uri(self, key: str) -> str:
        """The object's full address (``file://...`` or ``s3://bucket/...``)."""
        return f"{self._uri_base}/{key}"

    def put_once(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` if and only if no object is there yet.

        A create that fails on the way (reset, timeout, 5xx) is tried again; if the retry finds
        ``data`` itself at ``key``, the earlier attempt landed and the write has succeeded.

        Raises:
            AlreadyExists: the key holds another object; it is left untouched.
            StoreUnavailable: the store kept failing for ``retry_timeout_s``.
        """
        retry = StoreRetry(None, f"writing {key!r}", store=self.where, budget_s=self._retry_timeout_s,
                           first_backoff_s=DEFAULT_POLICY.write_first_backoff_s,
                           max_backoff_s=DEFAULT_POLICY.write_max_backoff_s)
        locked = self.lock is not None and self.lock.covers(key)
        while True:
            try:
                if locked:
                    assert self.lock is not None
                    self.lock.put_once(key, data)
                else:
                    obstore.put(self._inner, key, data, mode="create")
                return
            except (AlreadyExistsError, PreconditionError, ObjectExists) as exc:
                if retry.retries and self._holds(key, data):
                    return
                raise AlreadyExists(key) from exc
            except Exception as exc:  # sorted by the retry policy: only the store misbehaving is retried
                retry.failed(exc)

    def _holds(self, key: str, data: bytes) -> bool:
        try:
            return self.get(key) == data
        except ObjectNotFound:
            return False

    def put_overwrite(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing what is there (only for mutable state such as cursors)."""
        obstore.put(self._inner, key, data, mode="overwrite")

    def get(self, key: str) -> bytes:
        """Read a whole object.

        Raises:
            ObjectNotFound: no object at ``key``.
        """
        try:
            return bytes(obstore.get(self._inner, key).bytes())
        except (NotFoundError, FileNotFoundError) as exc:
            raise ObjectNotFound(key) from exc

    def stream(self, key: str, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """Read an object as a stream of chunks, so a large object never sits whole in memory."""
        try:
            result = obstore.get(self._inner, key)
        except (NotFoundError, FileNotFoundError) as exc:
            raise ObjectNotFound(key) from exc
        for chunk in result.stream(min_chunk_size=chunk_size):
            yield bytes(chunk)

    def head(self, key: str) -> ObjectInfo:
        try:
            meta = obstore.head(self._inner, key)
        except (NotFoundError, FileNotFoundError) as exc:
            raise ObjectNotFound(key) from exc
        return ObjectInfo(key=str(meta["path"]), size=int(meta["size"]), last_modified=meta["last_modified"])

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "", *, after: str | None = None) -> list[ObjectInfo]:
        """Every object under ``prefix`` whose key sorts after ``after``, in key order."""
        found: list[ObjectInfo] = []
        for chunk in obstore.list(self._inner, prefix or None, offset=after, chunk_size=1000):
            for meta in chunk:
                key = str(meta["path"])
                if after is not None and key <= after:
                    continue
                found.append(ObjectInfo(key=key, size=int(meta["size"]), last_modified=meta["last_modified"]))
        if not self._sorts_listings:
            found.sort(key=lambda info: info.key)
        return found

    def list_folders(self, prefix: str) -> Sequence[str]:
        """The "folders" directly under ``prefix`` (keys up to the next ``/``), sorted: one request per
        thousand folders, however many objects they hold."""
        listed = obstore.list_with_delimiter(self._inner, prefix.rstrip("/") or None)
        return sorted(str(folder) for folder in listed["common_prefixes"])

    def delete(self, key: str) -> None:
        """Remove an object (maintenance of derived files only; the log is never deleted by AgentLake).

        Under Object Lock a delete of a locked key only hides it behind a delete marker; its locked
        version stays, and a delete of that version is refused by S3 until its retention ends.
        """
        obstore.delete(self._inner, key)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
