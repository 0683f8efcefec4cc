"""The same contract, on a local folder and on an S3-compatible server over HTTP."""

from __future__ import annotations

import threading

import pytest

from agentlake.errors import AlreadyExists, ObjectNotFound
from agentlake.storage.store import ObjectStore

pytestmark = pytest.mark.integration


def test_write_once_refuses_a_second_write(store: ObjectStore) -> None:
    store.put_once("log/v1/a.bin", b"first")
    with pytest.raises(AlreadyExists, match="write-once"):
        store.put_once("log/v1/a.bin", b"second")
    assert store.get("log/v1/a.bin") == b"first"


def test_concurrent_writers_to_one_key_exactly_one_wins(store: ObjectStore) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            store.put_once("race/key", f"writer-{i}".encode())
            outcome = f"won-{i}"
        except AlreadyExists:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("refused") == 7
    assert store.get("race/key") == f"writer-{winners[0].split('-')[1]}".encode()


def test_listing_after_a_cursor_is_sorted_and_exclusive(store: ObjectStore) -> None:
    keys = [f"log/v1/dt=2026-11-2{d}/hr=0{h}/k{i}" for d in (5, 6) for h in (1, 0) for i in (2, 1)]
    for key in keys:
        store.put_once(key, key.encode())
    listed = [o.key for o in store.list("log/v1/")]
    assert listed == sorted(keys)
    after = sorted(keys)[3]
    assert [o.key for o in store.list("log/v1/", after=after)] == sorted(keys)[4:]
    assert [o.key for o in store.list("log/v1/dt=2026-11-26/")] == sorted(k for k in keys if "dt=2026-11-26/" in k)
    assert store.list("nothing/") == []


def test_the_logs_days_are_listed_from_their_folders_oldest_first(store: ObjectStore) -> None:
    from agentlake.log.reader import LogReader

    assert LogReader(store).days() == []
    for key in ("log/v1/dt=2026-11-26/hr=01/a", "log/v1/dt=2025-02-03/hr=23/b", "log/v1/dt=2026-11-26/hr=02/c",
                "deployment/v1/first-day.json"):
        store.put_once(key, b"x")
    assert store.list_folders("log/v1") == ["log/v1/dt=2025-02-03", "log/v1/dt=2026-11-26"]
    assert LogReader(store).days() == ["2025-02-03", "2026-11-26"]


def test_read_back_whole_and_streamed(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 40_000  # 10 MB, several stream chunks
    store.put_once("blob", payload)
    assert store.get("blob") == payload
    assert b"".join(store.stream("blob", chunk_size=1024 * 1024)) == payload
    assert store.head("blob").size == len(payload)


def test_missing_object_is_a_clear_error(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="agentlake log ls"):
        store.get("no/such/key")
    assert not store.exists("no/such/key")
