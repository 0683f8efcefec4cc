"""The ``agentlake`` command line. Every command takes ``--json`` for machine-readable output.

A user error (a bad flag or argument, a missing file, an unknown artifact or table, refused SQL,
a bad setting) is answered with one line on stderr, ``agentlake: <what is wrong and what to do>``,
and a non-zero exit: 2 when the command line or the environment must change, 1 when AgentLake
could not do what was asked (an outage, a conflict, a damaged object). Foreign exceptions that
stand for a user error are turned into AgentLake errors where the input is received; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar

import orjson

from agentlake.config import Settings
from agentlake.errors import (
    AgentLakeError,
    ConfigError,
    InvalidSegmentKey,
    ObjectNotFound,
    redact_credentials,
)
from agentlake.log.reader import LogReader
from agentlake.log.segments import LOG_PREFIX, SegmentInfo
from agentlake.log.writer import LogWriter, producer_name
from agentlake.storage.store import ObjectStore

N = TypeVar("N", int, float)


class UsageError(AgentLakeError):
    """The command line asks for something that cannot be: fix the arguments and run it again."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (the usage block is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"agentlake: error: {message}; see `{self.prog} --help`\n")


def _day(text: str) -> str:
    """An arrival day given on the command line, checked before anything is read."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a day: give it as YYYY-MM-DD, e.g. 2026-11-26")


def _bounded(convert: Callable[[str], N], accept: Callable[[N], bool], what: str) -> Callable[[str], N]:
    """An argparse type: the text converted and accepted, else refused naming ``what`` it must be."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_count = _bounded(int, lambda n: n >= 0, "a count: give a whole number, 0 or more")
_share = _bounded(float, lambda x: 0.0 <= x < 1.0, "a share: give a number from 0 up to (not including) 1")
_rate = _bounded(float, lambda x: x > 0.0, "a rate: give a number of runs per second above 0")


def _unreadable(name: str, exc: OSError, what: str) -> UsageError:
    return UsageError(f"cannot read {name}: {exc.strerror or exc}; give the path of {what}")


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
        return LogWriter(self.store, producer_name(name), signing_key=self.settings.signing_key)

    def reader(self) -> LogReader:
        return LogReader(self.store, signing_key=self.settings.signing_key,
                         previous_keys=self.settings.previous_signing_keys)


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(data, default=str).decode() + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


@contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(name, "rb")  # only the open is the user's error: a failed read is the machine's
    except OSError as exc:
        raise _unreadable(name, exc, "an NDJSON file (or - for standard input)") from None
    with handle:
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
    reader = ctx.reader()
    segments = reader.list_day(args.date) if args.date else reader.list_all()
    rows = [
        {"key": s.key, "dt": s.dt, "producer": s.producer, "first_seq": s.first_seq, "lines": s.lines,
         "bytes": s.size, "checksum": s.checksum, "signed": s.signature is not None}
        for s in segments
    ]
    # "signed" is what the key carries; reading the segment (ingest, `log cat`) checks it against the key.
    text = "\n".join(f"{r['key']}  lines={r['lines']}  bytes={r['bytes']}{'  signed' if r['signed'] else ''}"
                     for r in rows)
    total = sum(s.lines for s in segments)
    _out(args, {"segments": rows, "count": len(rows), "lines": total},
         (text + "\n" if text else "") + f"{len(rows)} segment(s), {total} line(s)")
    return 0


def cmd_log_cat(ctx: Context, args: argparse.Namespace) -> int:
    try:
        # The log's own prefix, exactly: a key that merely ends like a segment's is outside the log.
        if not args.key.startswith(f"{LOG_PREFIX}/dt="):
            raise InvalidSegmentKey(args.key)
        SegmentInfo.from_key(args.key)
    except AgentLakeError:
        raise UsageError(
            f"{args.key!r} is not a segment key (log/v1/dt=YYYY-MM-DD/hr=HH/...); `agentlake log ls` lists them"
        ) from None
    reader = ctx.reader()
    try:
        return _cat(reader, args)
    except ObjectNotFound as exc:
        raise UsageError(str(exc)) from None


def _cat(reader: LogReader, args: argparse.Namespace) -> int:
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
    with ctx.writer("demo") as writer, _demo_agents(ctx, writer, args.no_context) as decider:
        if args.forever:
            import signal
            import threading

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                report = demo.run_forever(writer, config, rate_runs_per_s=args.rate, stop=stop, decider=decider)
            except KeyboardInterrupt:
                stop.set()
                return 0
        else:
            report = demo.emit_runs(writer, config, runs=args.runs, start=datetime.now(UTC), decider=decider)
    summary = {"seed": seed, **dataclasses.asdict(report), "segments": writer.stats.segments}
    if decider is not None:
        summary.update(context_artifacts=decider.assembled, decisions_without_context=decider.without_context)
    _out(args, summary, " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


@contextmanager
def _demo_agents(ctx: Context, writer: LogWriter, off: bool) -> Iterator[Any]:
    """The agents that read their context from the lake (one engine for the whole fleet), unless ``off``."""
    if off:
        yield None
        return
    from agentlake.sources.agents import LakeAgents, LlmEndpoint
    from agentlake.tables.lake import Lake

    agents = LakeAgents(Lake(ctx.settings, store=ctx.store), log=writer, llm=LlmEndpoint.from_settings(ctx.settings))
    try:
        yield agents
    finally:
        agents.close()


def cmd_import_otlp(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources import otlp

    # A folder is walked for trace files; a path that is not there is a typo, not a failed import.
    if missing := [p for p in args.paths if not Path(p).exists()]:
        raise UsageError(f"no file or folder {', '.join(missing)}; give OTLP/JSON trace files or folders of them")
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
    from agentlake.gate.validations import write_data_docs
    from agentlake.pipeline.flow import ingest_pending_then_facts
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake

    options = IngestOptions(quality=QualityPolicy.from_settings(ctx.settings))
    report = ingest_pending_then_facts(Lake(ctx.settings, store=ctx.store), options, day=args.date)
    write_data_docs(ctx.store, [(g.validation, g.audit) for g in report.gate])
    data = report.as_dict()
    text = (f"ingested {report.segments} segment(s), {report.lines} lines: {report.rows} rows, "
            f"{report.quarantined} quarantined, {report.duplicates} duplicates "
            f"({report.segments_skipped} segment(s) already in the tables) in {report.seconds:.2f}s")
    if report.segments_bad:
        text += (f"\n{report.segments_bad} segment(s) held as a whole (corrupt, truncated, oversized or not what "
                 "their keys claim): their bytes stay in the log; `agentlake reconcile` names them")
    if report.segments_held:
        text += (f"\nthe quality gate held {report.segments_held} segment(s), {report.lines_held} lines: nothing of "
                 "them is published; list them with `agentlake publish` (they are retried by the next ingest)")
    _out(args, data, text)
    return 1 if report.segments_held or report.segments_bad else 0


def cmd_publish(ctx: Context, args: argparse.Namespace) -> int:
    """List held batches, or publish them as they are (an emergency override, recorded)."""
    from agentlake.gate.publish import held, held_days, write_audit_record
    from agentlake.gate.suites import QualityPolicy
    from agentlake.log.segments import SegmentInfo
    from agentlake.pipeline.flow import ingest_then_facts
    from agentlake.pipeline.stage import IngestOptions
    from agentlake.tables.lake import Lake
    from agentlake.tables.schemas import EVENTS

    if args.override and not (args.reason or "").strip():
        raise UsageError("--override needs --reason \"...\": the reason is recorded with the publish")
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
    if not chosen:
        raise UsageError("no held batch matches; list them with `agentlake publish`")
    segments = [SegmentInfo.from_key(k) for keys in chosen.values() for k in keys]
    record = write_audit_record(ctx.store, {
        "action": "override", "reason": args.reason, "segments": sorted(s.key for s in segments),
        "branches": sorted({v["branch"] for keys in chosen.values() for v in keys.values()}),
        "failed": sorted({f for keys in chosen.values() for v in keys.values() for f in v["failed"]}),
    }, ctx.settings.signing_key)
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
        lines += [f"  held as a whole: {key}" for key in r.segments_bad]
        lines += [f"  not a segment: {stray}" for stray in r.stray_objects]
        lines += [f"  tampered: {problem}" for problem in r.file_problems]
        lines += [f"  not AgentLake's: {record}" for record in r.untrusted_records]
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
    spec = _read_spec(args.spec) if args.spec else None  # before the engine loads: a typo answers at once
    from agentlake.context.assembly import ContextRequest, assemble, parse_time
    from agentlake.tables.lake import Lake

    if spec is not None:
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


def _read_spec(name: str) -> dict[str, Any]:
    try:
        spec = orjson.loads(Path(name).read_bytes())
    except OSError as exc:
        raise _unreadable(name, exc, "a JSON spec file") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"the spec {name} is not JSON ({exc}); fix the file") from None
    if not isinstance(spec, dict):
        raise UsageError(f"the spec {name} holds a JSON {type(spec).__name__}, not an object; "
                         'give {"sources": [{"table": ...}]}')
    return spec


def cmd_replay(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.context.replay import replay
    from agentlake.tables.lake import Lake

    reports = replay(Lake(ctx.settings, store=ctx.store), args.ref, at_current=args.at_current)
    _out(args, {"replays": [r.as_dict() for r in reports]}, "\n".join(r.text() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def cmd_sources_demo(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources import helpdesk
    from agentlake.sources.demo import write_demo_documents

    path = ctx.settings.sources_home / "helpdesk.db"
    state = helpdesk.create(path, seed=args.seed)
    if args.advance:
        state = helpdesk.advance(path, args.advance)
    folder = ctx.settings.documents_dir
    written = write_demo_documents(folder)
    _out(args, {**state.as_dict(), "documents_dir": str(folder), "documents_written": written},
         f"demo helpdesk {state.path}: {state.tickets} tickets, {state.customers} customers "
         f"at {state.now.isoformat()} (step {state.step}); demo documents in {folder} ({written} written)")
    return 0


def cmd_sources_ls(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources.external import describe
    from agentlake.tables.lake import Lake

    tables = describe(Lake(ctx.settings, store=ctx.store))
    lines = [f"{t['source']:<10} {t['table']:<16} rows={t['rows']:<8} snapshot={t['snapshot_id']} "
             f"cursor={t['cursor']} last_load={t['last_load_id']}"
             + (f" held={','.join(t['held_loads'])} ({', '.join(t['held_failed'])})" if t["held_loads"] else "")
             for t in tables]
    _out(args, {"tables": tables}, "\n".join(lines))
    return 0


def cmd_sources_load(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.sources.external import load
    from agentlake.tables.lake import Lake

    loads = load(Lake(ctx.settings, store=ctx.store), [args.name] if args.name else None)
    lines = []
    for x in loads:
        what = (f"held: {', '.join(x.failed)}; nothing published" if x.held else "unchanged" if x.unchanged
                else f"published snapshot {x.published_snapshot_id}")
        lines.append(f"{x.table}: {x.rows_loaded} rows loaded (load {x.load_id}), {what}; {x.rows} rows, "
                     f"cursor {x.cursor_after}")
        lines += [f"  skipped {s['path']}: {s['reason']}" for s in x.skipped]
    _out(args, {"loads": [x.as_dict() for x in loads]}, "\n".join(lines))
    return 1 if any(x.held for x in loads) else 0


def cmd_audit(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.context.audit import audit
    from agentlake.tables.lake import Lake

    trail = audit(Lake(ctx.settings, store=ctx.store), args.run_id)
    _out(args, trail.as_dict(), trail.text())
    return 1 if trail.tampered else 0


def cmd_backfill(ctx: Context, args: argparse.Namespace) -> int:
    """Launch a partition backfill on the running platform; print its id and its page in the UI."""
    # The Dagster side speaks to the webserver (plain HTTP, no Dagster import), so it is imported here.
    from platform_defs.backfill import BackfillRefused, launch_backfill

    try:
        launched = launch_backfill(ctx.settings.resolved_ui_url, args.assets, date.fromisoformat(args.start),
                                   date.fromisoformat(args.end))
    except BackfillRefused as exc:
        raise UsageError(str(exc)) from None
    of = f"job {launched.job} ({' '.join(launched.assets)})" if launched.job else " ".join(launched.assets)
    _out(args, launched.as_dict(), f"backfill {launched.backfill_id} of {of} for "
                                   f"{len(launched.partitions)} day(s): {launched.url}")
    return 0


def _eval_day(args: argparse.Namespace) -> str:
    return args.day or datetime.now(UTC).date().isoformat()


def cmd_eval_run(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.eval.evaluate import evaluate_day
    from agentlake.tables.lake import Lake

    report = evaluate_day(Lake(ctx.settings, store=ctx.store), _eval_day(args))
    _out(args, report.as_dict(), report.text())
    return 1 if report.not_reproducible else 0


def cmd_eval_compare(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.eval.compare import agent_of, compare
    from agentlake.eval.evaluate import EvalError
    from agentlake.tables.lake import Lake

    try:  # which versions exist is known before anything is read: a wrong one is the command line's fault
        (base, _), (cand, _) = agent_of(args.baseline), agent_of(args.candidate)
    except EvalError as exc:
        raise UsageError(str(exc)) from None
    if base != cand:
        raise UsageError(f"{args.baseline} is a version of {base}, {args.candidate} one of {cand}: compare two "
                         "versions of the same agent")
    report = compare(Lake(ctx.settings, store=ctx.store), args.baseline, args.candidate, _eval_day(args))
    _out(args, report.as_dict(), report.text())
    return 0


def _dataset_name(name: str | None) -> None:
    """A dataset name given on the command line, checked before anything is read."""
    from agentlake.eval.datasets import check_name
    from agentlake.eval.evaluate import EvalError

    try:
        if name is not None:
            check_name(name)
    except EvalError as exc:
        raise UsageError(str(exc)) from None


def cmd_eval_dataset_create(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.eval.datasets import create_dataset
    from agentlake.tables.lake import Lake

    _dataset_name(args.name)
    dataset = create_dataset(Lake(ctx.settings, store=ctx.store), args.name, args.sql)
    _out(args, dataset.summary(), f"{dataset.version}: {dataset.manifest['rows']} rows at "
         + ", ".join(f"{t}@{s}" for t, s in sorted(dataset.manifest["pins"].items())))
    return 0


def cmd_eval_dataset_ls(ctx: Context, args: argparse.Namespace) -> int:
    from agentlake.eval.datasets import list_datasets
    from agentlake.tables.lake import Lake

    _dataset_name(args.name)
    datasets = [d.summary() for d in list_datasets(Lake(ctx.settings, store=ctx.store), args.name)]
    _out(args, {"datasets": datasets},
         "\n".join(f"{d['version']}  {d['rows']} rows  {d['created_at']}  {d['sql']}" for d in datasets)
         or "no datasets yet: `agentlake eval dataset create NAME --sql SQL` makes one")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentlake", description="AgentLake: the data platform for AI agents.")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("emit", parents=[common], help="append NDJSON events (a file or -) to the log")
    p.add_argument("file")
    p.set_defaults(func=cmd_emit, parser=p)

    p = sub.add_parser("import-otlp", parents=[common], help="import OTLP/JSON trace files into the log")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_import_otlp, parser=p)

    p = sub.add_parser("demo", parents=[common], help="append simulated agent runs to the log")
    p.add_argument("--runs", type=_count, default=100)
    p.add_argument("--seed", type=int, default=None, help="same seed, same runs (default: a new seed)")
    p.add_argument("--bad-share", type=_share, default=0.0, help="share of malformed lines to mix in (0..1)")
    p.add_argument("--forever", action="store_true", help="keep emitting runs in real time until stopped")
    p.add_argument("--rate", type=_rate, default=2.0, help="runs per second with --forever")
    p.add_argument("--no-context", action="store_true",
                   help="agents do not read their context from the lake (no artifacts; output depends on the seed only)")
    p.set_defaults(func=cmd_demo, parser=p)

    p = sub.add_parser("ingest", parents=[common], help="ingest every pending segment into the tables now")
    p.add_argument("--date", type=_day, help="only segments that arrived on this day (YYYY-MM-DD)")
    p.set_defaults(func=cmd_ingest, parser=p)

    p = sub.add_parser("publish", parents=[common],
                       help="list batches held back by a failed audit, or publish them by a recorded override")
    p.add_argument("--day", type=_day, help="only batches of this arrival day (YYYY-MM-DD)")
    p.add_argument("--branch", help="only the batch staged on this branch")
    p.add_argument("--override", action="store_true", help="publish despite failed batch checks (recorded)")
    p.add_argument("--reason", help="why the override is needed (required with --override)")
    p.set_defaults(func=cmd_publish, parser=p)

    p = sub.add_parser("query", parents=[common], help="read-only SQL over the tables (raw.events, facts.*)")
    p.add_argument("sql")
    p.add_argument("--as-of", help="answer with the snapshots current at this time (ISO 8601 with a zone, or epoch ms)")
    p.set_defaults(func=cmd_query, parser=p)

    p = sub.add_parser("reconcile", parents=[common], help="check lines = rows + quarantined + duplicates per day")
    p.add_argument("--date", type=_day, help="one arrival day (YYYY-MM-DD)")
    p.add_argument("--verify", action="store_true",
                   help="also read every data file (size and row count against its manifest), not only metadata")
    p.set_defaults(func=cmd_reconcile, parser=p)

    p = sub.add_parser("maintain", parents=[common], help="compact small files and expire old unpinned snapshots now")
    p.add_argument("--table", action="append", help="a table to maintain (repeatable; default: every table)")
    p.set_defaults(func=cmd_maintain, parser=p)

    p = sub.add_parser("backfill", parents=[common],
                       help="launch a backfill of assets for a range of arrival days on the running platform")
    p.add_argument("assets", nargs="+", metavar="ASSET", help="asset keys as the UI shows them, e.g. raw/events")
    p.add_argument("--from", dest="start", type=_day, required=True, help="first arrival day (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", type=_day, required=True, help="last arrival day, included (YYYY-MM-DD)")
    p.set_defaults(func=cmd_backfill, parser=p)

    context = sub.add_parser("context", help="per-run context artifacts")
    context_sub = context.add_subparsers(dest="context_command", required=True)
    p = context_sub.add_parser("build", parents=[common], help="assemble a run's context; prints the artifact's URI")
    p.add_argument("--run-id", required=True, help="the agent run the context is for")
    p.add_argument("--agent-id", default="cli", help="the agent the run belongs to (default: cli)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sql", help="one read-only SQL statement over the tables")
    source.add_argument("--spec", help="a JSON file: {\"sources\": [{\"table\", \"columns\", \"where\", \"order_by\", \"limit\"}]}")
    p.add_argument("--as-of", help="read the snapshots current at this time (ISO 8601 with a zone, or epoch ms)")
    p.set_defaults(func=cmd_context_build, parser=p)

    p = sub.add_parser("replay", parents=[common], help="re-execute a context artifact and compare its records")
    p.add_argument("ref", metavar="ARTIFACT|RUN_ID", help="an artifact's URI or key, or a run id (all its artifacts)")
    p.add_argument("--at-current", action="store_true", help="replay against today's snapshots to see what changed")
    p.set_defaults(func=cmd_replay, parser=p)

    sources_cmd = sub.add_parser("sources", help="external sources loaded with dlt into the ext tables")
    sources_sub = sources_cmd.add_subparsers(dest="sources_command", required=True)
    p = sources_sub.add_parser("ls", parents=[common], help="configured sources: last load, rows, snapshot, cursor")
    p.set_defaults(func=cmd_sources_ls, parser=p)
    p = sources_sub.add_parser("load", parents=[common], help="load the sources (or one) and publish through the gate")
    p.add_argument("name", nargs="?", help="the source to load (default: all)")
    p.set_defaults(func=cmd_sources_load, parser=p)
    p = sources_sub.add_parser("demo", parents=[common], help="create the demo helpdesk database, or move it forward")
    p.add_argument("--advance", type=_count, default=0, metavar="MINUTES",
                   help="simulated minutes to move on: tickets opened, updated and closed, plans changed")
    p.add_argument("--seed", type=_count, default=0, help="the demo's seed when it is created (default 0)")
    p.set_defaults(func=cmd_sources_demo, parser=p)

    p = sub.add_parser("audit", parents=[common],
                       help="walk from a run's decision to its artifact, pinned snapshots and log segments")
    p.add_argument("run_id", metavar="RUN_ID", help="the agent run whose decision is audited")
    p.set_defaults(func=cmd_audit, parser=p)

    evaluation = sub.add_parser("eval", help="evaluate decisions, compare agent versions, keep datasets")
    eval_sub = evaluation.add_subparsers(dest="eval_command", required=True)
    p = eval_sub.add_parser("run", parents=[common], help="evaluate a day's decisions and print figures per version")
    p.add_argument("--day", type=_day, help="the arrival day of the decisions (YYYY-MM-DD; default: today, UTC)")
    p.set_defaults(func=cmd_eval_run, parser=p)
    p = eval_sub.add_parser("compare", parents=[common],
                            help="re-decide a baseline version's pinned contexts with a candidate version, pair by pair")
    p.add_argument("--baseline", required=True, help="VERSION or AGENT@VERSION whose contexts are re-decided")
    p.add_argument("--candidate", required=True, help="VERSION or AGENT@VERSION run over them")
    p.add_argument("--day", type=_day, help="the arrival day of the baseline's decisions (default: today, UTC)")
    p.set_defaults(func=cmd_eval_compare, parser=p)
    dataset = eval_sub.add_parser("dataset", help="named, pinned queries kept write-once")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    p = dataset_sub.add_parser("create", parents=[common], help="run SQL at pinned snapshots and keep its rows")
    p.add_argument("name")
    p.add_argument("--sql", required=True, help="one read-only SQL statement over the tables")
    p.set_defaults(func=cmd_eval_dataset_create, parser=p)
    p = dataset_sub.add_parser("ls", parents=[common], help="list dataset versions")
    p.add_argument("name", nargs="?", help="only this dataset's versions")
    p.set_defaults(func=cmd_eval_dataset_ls, parser=p)

    log = sub.add_parser("log", help="inspect the raw event log")
    log_sub = log.add_subparsers(dest="log_command", required=True)
    p = log_sub.add_parser("ls", parents=[common], help="list segments")
    p.add_argument("--date", type=_day, help="only segments that arrived on this day (YYYY-MM-DD)")
    p.set_defaults(func=cmd_log_ls, parser=p)
    p = log_sub.add_parser("cat", parents=[common], help="print a segment's lines as they were written")
    p.add_argument("key")
    p.set_defaults(func=cmd_log_cat, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user error is one line on stderr and the exit status 2 (1 when AgentLake failed)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser, so the hint points at that command's --help
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[Context, argparse.Namespace], int] = args.func
    try:
        settings = Settings.from_env()
        return func(Context(settings), args)
    except AgentLakeError as exc:
        sys.stderr.write(f"agentlake: {_one_line(exc)}\n")
        return exit_status(exc)
    except Exception as exc:
        from agentlake.storage.retry import classify, describe_store

        if classify(exc).value != "transient":
            raise  # not the store being away: a bug, and its traceback is what helps
        sys.stderr.write(f"agentlake: the object store ({describe_store(settings)}) could not be reached: "
                         f"{_foreign_line(exc)}; check that it is up and that AGENTLAKE_S3_ENDPOINT and the "
                         "credentials are right, then run again\n")
        return 1


def _foreign_line(exc: BaseException) -> str:
    """The first line of another library's message, with any credentials in a URL taken out."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return redact_credentials(first)[:300]


def _one_line(exc: AgentLakeError) -> str:
    # Some messages carry an engine's multi-line text; a terminal line must stay one line.
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__


def exit_status(exc: AgentLakeError) -> int:
    """2 when the user's input was wrong (change the command line or the environment), else 1.

    The core's input errors are imported here, not at the top, so that a command that never
    loaded their modules stays quick to start.
    """
    if isinstance(exc, UsageError | ConfigError):
        return 2
    from agentlake.context.assembly import ArtifactNotFound, InvalidRequest
    from agentlake.context.query import QueryError, SnapshotGone
    from agentlake.maintenance.maintain import UnknownTable
    from agentlake.sources.external import UnknownSource

    if isinstance(exc, SnapshotGone):  # the query was fine; the data it names is no longer kept
        return 1
    return 2 if isinstance(exc, InvalidRequest | ArtifactNotFound | QueryError | UnknownTable | UnknownSource) else 1


if __name__ == "__main__":
    sys.exit(main())
