"""A producer process for the concurrency tests: its own LogWriter, uploads randomly delayed."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from agentlake.log.writer import LogWriter
from agentlake.storage.store import ObjectStore
from tests.conftest import open_store


class DelayedStore(ObjectStore):
    """The real store, but each segment upload waits a random time first (a slow network)."""

    def __init__(self, inner: ObjectStore, rng: random.Random, max_delay_s: float) -> None:
        self.__dict__.update(inner.__dict__)
        self._rng = rng
        self._max_delay_s = max_delay_s

    def put_once(self, key: str, data: bytes) -> None:
        time.sleep(self._rng.uniform(0, self._max_delay_s))
        super().put_once(key, data)


def produce(spec: dict[str, object], producer: str, events: int, seed: int, max_delay_s: float) -> list[str]:
    """Append ``events`` events as ``producer``; returns the keys of the segments written."""
    rng = random.Random(seed)
    store = DelayedStore(open_store(spec), rng, max_delay_s)
    writer = LogWriter(store, producer, max_segment_events=500, max_segment_age_s=0.2, background_flush=True)
    now = datetime.now(UTC).isoformat()
    with writer:
        for i in range(events):
            writer.append(
                {"event_id": f"{producer}-{i}", "run_id": f"r{i // 10}", "agent_id": producer, "type": "llm_call",
                 "ts": now, "i": i}
            )
            if i % 2000 == 0:
                time.sleep(rng.uniform(0, 0.05))
    return [seg.key for seg in writer.stats.sealed]
