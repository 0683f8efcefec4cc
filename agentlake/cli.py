"""The ``agentlake`` command line. Every command takes ``--json`` for machine-readable output."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from agentlake.config import Settings
from agentlake.errors import AgentLakeError
from agentlake.log.reader import LogReader
from agentlake.log.writer import LogWriter, producer_name
from agentlake.storage.store import ObjectStore


class Context:
    """What every command needs: the settings, resolved once, and the object store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ObjectStore.from_settings(self.settings)
        return self._store

    def writer(self, name: str) -> LogWriter:
        return LogWriter(self.store, producer_name(name))


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


@contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
    else:
        with open(name, "rb") as handle:
            yield handle


def cmd_emit(ctx: Context, args: argparse.Namespace) -> int:
    lines = 0
    with ctx.writer("emit") as writer, _open_input(args.file) as handle:
        for raw in handle:
            # Bad lines go into the log as they are: ingestion quarantines them with a reason.
            writer.append_line(raw[:-1] if raw.endswith(b"\n") else raw)
            lines += 1
    stats = writer.stats
    keys = [seg.key for seg in stats.sealed]
    _out(
        args,
        {"lines": lines, "segments": keys, "producer": writer.producer},
        f"appended {lines} lines in {len(keys)} segment(s)\n" + "\n".join(keys),
    )
    return 0


def cmd_log_ls(ctx: Context, args: argparse.Namespace) -> int:
    reader = LogReader(ctx.store)
    segments = reader.list_day(args.date) if args.date else reader.list_all()
    rows = [
        {"key": s.key, "dt": s.dt, "producer": s.producer, "first_seq": s.first_seq, "lines": s.lines,
         "bytes": s.size, "checksum": s.checksum}
        for s in segments
    ]
    text = "\n".join(f"{r['key']}  lines={r['lines']}  bytes={r['bytes']}" for r in rows)
    total = sum(s.lines for s in segments)
    _out(args, {"segments": rows, "count": len(rows), "lines": total},
         (text + "\n" if text else "") + f"{len(rows)} segment(s), {total} line(s)")
    return 0


def cmd_log_cat(ctx: Context, args: argparse.Namespace) -> int:
    reader = LogReader(ctx.store)
    if args.json:
        lines = [line.decode("utf-8", "backslashreplace") for line in reader.read_lines(args.key)]
        sys.stdout.write(orjson.dumps({"key": args.key, "lines": lines}).decode() + "\n")
        return 0
    out = sys.stdout.buffer
    for line in reader.read_lines(args.key):
        out.write(line + b"\n")
    out.flush()
    return 0


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources import demo

    seed = args.seed if args.seed is not None else int.from_bytes(__import__("os").urandom(4), "big")
    config = demo.FleetConfig(seed=seed, bad_share=args.bad_share)
    with ctx.writer("demo") as writer:
        if args.forever:
            import signal
            import threading

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                report = demo.run_forever(writer, config, rate_runs_per_s=args.rate, stop=stop)
            except KeyboardInterrupt:
                stop.set()
                return 0
        else:
            report = demo.emit_runs(writer, config, runs=args.runs, start=datetime.now(UTC))
    summary = {"seed": seed, **dataclasses.asdict(report), "segments": writer.stats.segments}
    _out(args, summary, " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_import_otlp(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources import otlp

    with ctx.writer("otlp") as writer:
        report = otlp.import_otlp([Path(p) for p in args.paths], writer)
    data = {
        "files": report.files, "spans": report.spans, "events": report.events,
        "failures": [{"file": str(path), "reason": reason} for path, reason in report.failures],
    }
    text = f"imported {report.events} events from {report.spans} spans in {report.files} file(s)"
    text += "".join(f"\nfailed: {path}: {reason}" for path, reason in report.failures)
    _out(args, data, text)
    return 1 if report.failures else 0


def cmd_ingest(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.gate.suites import QualityPolicy
    from agentlake.pipeline.flow import ingest_pending_then_facts
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake

    options = IngestOptions(quality=QualityPolicy.from_settings(ctx.settings))
    report = ingest_pending_then_facts(Lake(ctx.settings, store=ctx.store), options, day=args.date)
    data = report.as_dict()
    text = (f"ingested {report.segments} segment(s), {report.lines} lines: {report.rows} rows, "
            f"{report.quarantined} quarantined, {report.duplicates} duplicates "
            f"({report.segments_skipped} segment(s) already in the tables) in {report.seconds:.2f}s")
    if report.segments_held:
        text += (f"\nthe quality gate held {report.segments_held} segment(s), {report.lines_held} lines: nothing of "
                 "them is published; list them with `agentlake publish` (they are retried by the next ingest)")
    _out(args, data, text)
    return 1 if report.segments_held else 0


def cmd_publish(ctx: Context, args: argparse.Namespace) -> int:
    """List held batches, or publish them as they are (an emergency override, recorded)."""
    from agentlake.gate.publish import held, held_days, write_audit_record
    from agentlake.gate.suites import QualityPolicy
    from agentlake.log.segments import SegmentInfo
    from agentlake.pipeline.flow import ingest_then_facts
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake
    from agentlake.tables.schemas import EVENTS

    lake = Lake(ctx.settings, store=ctx.store)
    properties = lake.table(EVENTS.name).properties
    days = [args.day] if args.day else held_days(properties)
    batches = {day: {k: v for k, v in held(properties, day).items() if not args.branch or v["branch"] == args.branch}
               for day in days}
    chosen = {day: keys for day, keys in batches.items() if keys}
    if not args.override:
        listing = [{"day": d, "segment": k, **{f: v[f] for f in ("branch", "snapshot_id", "failed")}}
                   for d, keys in chosen.items() for k, v in keys.items()]
        _out(args, {"held": listing}, "\n".join(
            f"{r['day']} {r['branch']} snapshot {r['snapshot_id']} failed {','.join(r['failed'])}: {r['segment']}"
            for r in listing) or "no held batches")
        return 0
    if not args.reason or not args.reason.strip():
        raise AgentLakeError("--override needs --reason \"...\": the reason is recorded with the publish")
    if not chosen:
        raise AgentLakeError("no held batch matches; list them with `agentlake publish`")
    segments = [SegmentInfo.from_key(k) for keys in chosen.values() for k in keys]
    record = write_audit_record(ctx.store, {
        "action": "override", "reason": args.reason, "segments": sorted(s.key for s in segments),
        "branches": sorted({v["branch"] for keys in chosen.values() for v in keys.values()}),
        "failed": sorted({f for keys in chosen.values() for v in keys.values() for f in v["failed"]}),
    })
    options = IngestOptions(quality=QualityPolicy.from_settings(ctx.settings), override=args.reason)
    report = ingest_then_facts(lake, segments, options)
    data = {"segments": len(segments), "rows": report.rows, "quarantined": report.quarantined,
            "audit_record": record, "snapshots": report.snapshots}
    _out(args, data, f"published {len(segments)} held segment(s) by override: {report.rows} rows; "
                     f"recorded at {record}")
    return 0


def cmd_query(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.context.query import query
    from agentlake.tables.lake import Lake

    as_of_ms = None
    if args.as_of:
        from agentlake.context.assembly import parse_time, to_ms

        as_of_ms = to_ms(parse_time(args.as_of))
    table = query(Lake(ctx.settings, store=ctx.store), args.sql, as_of_ms=as_of_ms)
    rows = table.to_pylist()
    if args.json:
        sys.stdout.write(orjson.dumps({"columns": table.column_names, "rows": rows}, default=str).decode() + "\n")
        return 0
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=50, fmt_str_lengths=60):
        sys.stdout.write(f"{pl.from_arrow(table)}\n")
    return 0


def cmd_reconcile(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.pipeline.reconcile import reconcile
    from agentlake.tables.lake import Lake

    results = reconcile(Lake(ctx.settings, store=ctx.store), args.date, verify=args.verify)
    lines = []
    for r in results:
        state = "balanced" if r.balanced else "NOT BALANCED"
        lines.append(
            f"{r.day}: {state}: lines {r.lines_in_log} = rows {r.rows} + quarantined {r.quarantined} "
            f"+ duplicates {r.duplicates} + held {r.lines_held} (+ pending {r.lines_pending}); "
            f"segments {r.segments_in_log}, missing {len(r.segments_missing)}, held {r.segments_held}, "
            f"pending {r.segments_pending}" + (f"; data files read {r.files_checked}" if r.verified else "")
        )
        lines += [f"  missing: {key}" for key in r.segments_missing]
        lines += [f"  tampered: {problem}" for problem in r.file_problems]
    _out(args, {"days": [r.as_dict() for r in results]}, "\n".join(lines) or "the log is empty")
    return 0 if all(r.balanced for r in results) else 1


def cmd_maintain(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.maintenance.maintain import maintain
    from agentlake.tables.lake import Lake

    reports = maintain(Lake(ctx.settings, store=ctx.store), args.table or None)
    lines = []
    for r in reports:
        row = r.summary()
        lines.append(
            f"{r.table}: {row['files_rewritten']} files rewritten into {row['files_written']}, "
            f"{row['snapshots_expired']} snapshots expired ({row['snapshots_kept']} kept), "
            f"{row['files_deferred']} files deferred, {row['files_deleted']} deleted; data {row['bytes_before']:,} -> {row['bytes_after']:,} bytes"
        )
    _out(args, {"tables": [r.summary() for r in reports]}, "\n".join(lines))
    return 0


def cmd_context_build(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.context.assembly import ContextRequest, InvalidRequest, assemble, parse_time
    from agentlake.tables.lake import Lake

    if args.spec:
        try:
            spec = orjson.loads(Path(args.spec).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise InvalidRequest(f"cannot read the spec {args.spec}: {exc}; it must be a JSON file") from None
        request = ContextRequest.from_spec(spec)
    else:
        request = ContextRequest.from_sql(args.sql)
    as_of = parse_time(args.as_of) if args.as_of else None
    result = assemble(Lake(ctx.settings, store=ctx.store), request, run_id=args.run_id, agent_id=args.agent_id,
                      as_of=as_of)
    manifest = result.manifest
    if args.json:
        data = {"uri": result.uri, "key": result.artifact.key, "digest": result.artifact.digest,
                "pins": manifest["pins"], "record_count": manifest["record_count"],
                "records_hash": manifest["records_hash"], "records": result.to_dicts()}
        sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")
        return 0
    sys.stdout.write(result.uri + "\n")
    return 0


def cmd_replay(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.context.replay import replay
    from agentlake.tables.lake import Lake

    reports = replay(Lake(ctx.settings, store=ctx.store), args.ref, at_current=args.at_current)
    _out(args, {"replays": [r.as_dict() for r in reports]}, "\n".join(r.text() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentlake", description="AgentLake: the data platform for AI agents.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("emit", parents=[common], help="append NDJSON events (a file or -) to the log")
    p.add_argument("file")
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser("import-otlp", parents=[common], help="import OTLP/JSON trace files into the log")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_import_otlp)

    p = sub.add_parser("demo", parents=[common], help="append simulated agent runs to the log")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=None, help="same seed, same runs (default: a new seed)")
    p.add_argument("--bad-share", type=float, default=0.0, help="share of malformed lines to mix in (0..1)")
    p.add_argument("--forever", action="store_true", help="keep emitting runs in real time until stopped")
    p.add_argument("--rate", type=float, default=2.0, help="runs per second with --forever")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", parents=[common], help="ingest every pending segment into the tables now")
    p.add_argument("--date", help="only segments that arrived on this day (YYYY-MM-DD)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("publish", parents=[common],
                       help="list batches held back by a failed audit, or publish them by a recorded override")
    p.add_argument("--day", help="only batches of this arrival day (YYYY-MM-DD)")
    p.add_argument("--branch", help="only the batch staged on this branch")
    p.add_argument("--override", action="store_true", help="publish despite failed batch checks (recorded)")
    p.add_argument("--reason", help="why the override is needed (required with --override)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("query", parents=[common], help="read-only SQL over the tables (raw.events, facts.*)")
    p.add_argument("sql")
    p.add_argument("--as-of", help="answer with the snapshots current at this time (ISO 8601 with a zone, or epoch ms)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("reconcile", parents=[common], help="check lines = rows + quarantined + duplicates per day")
    p.add_argument("--date", help="one arrival day (YYYY-MM-DD)")
    p.add_argument("--verify", action="store_true",
                   help="also read every data file (size and row count against its manifest), not only metadata")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("maintain", parents=[common], help="compact small files and expire old unpinned snapshots now")
    p.add_argument("--table", action="append", help="a table to maintain (repeatable; default: every table)")
    p.set_defaults(func=cmd_maintain)

    context = sub.add_parser("context", help="per-run context artifacts")
    context_sub = context.add_subparsers(dest="context_command", required=True)
    p = context_sub.add_parser("build", parents=[common], help="assemble a run's context; prints the artifact's URI")
    p.add_argument("--run-id", required=True, help="the agent run the context is for")
    p.add_argument("--agent-id", default="cli", help="the agent the run belongs to (default: cli)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sql", help="one read-only SQL statement over the tables")
    source.add_argument("--spec", help="a JSON file: {\"sources\": [{\"table\", \"columns\", \"where\", \"order_by\", \"limit\"}]}")
    p.add_argument("--as-of", help="read the snapshots current at this time (ISO 8601 with a zone, or epoch ms)")
    p.set_defaults(func=cmd_context_build)

    p = sub.add_parser("replay", parents=[common], help="re-execute a context artifact and compare its records")
    p.add_argument("ref", metavar="ARTIFACT|RUN_ID", help="an artifact's URI or key, or a run id (all its artifacts)")
    p.add_argument("--at-current", action="store_true", help="replay against today's snapshots to see what changed")
    p.set_defaults(func=cmd_replay)

    log = sub.add_parser("log", help="inspect the raw event log")
    log_sub = log.add_subparsers(dest="log_command", required=True)
    p = log_sub.add_parser("ls", parents=[common], help="list segments")
    p.add_argument("--date", help="only segments that arrived on this day (YYYY-MM-DD)")
    p.set_defaults(func=cmd_log_ls)
    p = log_sub.add_parser("cat", parents=[common], help="print a segment's lines as they were written")
    p.add_argument("key")
    p.set_defaults(func=cmd_log_cat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[Context, argparse.Namespace], int] = args.func
    try:
        return func(Context(Settings.from_env()), args)
    except AgentLakeError as exc:
        sys.stderr.write(f"agentlake: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
