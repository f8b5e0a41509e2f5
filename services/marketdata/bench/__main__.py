"""`marketdata bench`: starts the platform on this machine (real NATS and PostgreSQL, services as processes)
and measures, in one run, end-to-end ingest against its ceilings, tick -> SSE latency with a memory soak,
and query latency; prints a table, writes JSON and a PNG plot.

NATS_URL / DATABASE_URL are used when set (the bench creates its own database, stream and subjects there);
otherwise embedded ones are started in a temporary directory."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from marketdata.common.runner import signals_ignored, sigterm_interrupts

# The webhook latency case: 500-tick calls offered at 10,000 ticks/s (20 calls/s).
WEBHOOK_RATE = 10_000
WEBHOOK_LATENCY_BATCH = 500
PHASES = ("ingest", "ceilings", "live", "query", "ticker", "scale")
# Phases run unless --phases names them: scale seeds 100 million ticks (many minutes of disk-heavy work).
DEFAULT_PHASES = PHASES[:-1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="marketdata bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny volumes (~1 min): a smoke test, not a measurement")
    parser.add_argument("--out", default=None,
                        help="results JSON path (the PNG goes beside it), or a directory for results.json/.png "
                             "(default bench-results/bench-<UTC time>.json)")
    parser.add_argument("--ticks", type=int, help="ticks of the PublishTicks run (default 300,000; quick 20,000)")
    parser.add_argument("--stream-ticks", type=int, help="ticks of the StreamTicks run (default 150,000)")
    parser.add_argument("--webhook-ticks", type=int, help="ticks of the REST webhook run (default 150,000)")
    parser.add_argument("--webhook-latency-seconds", type=int,
                        help="seconds of the paced webhook latency case (default 20; quick 3)")
    parser.add_argument("--batch", type=int, default=5000, help="ticks per client batch (default 5,000)")
    parser.add_argument("--clients", type=int, help="concurrent ingest clients (default 4; quick 2)")
    parser.add_argument("--rate", type=int, help="ticks/s of the live run (default 10,000; quick 2,000)")
    parser.add_argument("--sse-clients", type=int, help="SSE clients of the live run (default 500; quick 50)")
    parser.add_argument("--soak-seconds", type=float,
                        help="length of the live run / soak (default 60; quick 6; 600 for the full soak)")
    parser.add_argument("--query-ticks", type=int, help="ticks seeded for query latency (default 1,040,000)")
    parser.add_argument("--query-requests", type=int, help="requests per query case (default 200; quick 20)")
    parser.add_argument("--ticker-ticks", type=int,
                        help="ticks per symbol (100 symbols, last 25 hours) seeded for GetTicker (default 14,400; quick 300)")
    parser.add_argument("--scale-ticks", type=int,
                        help="ticks seeded by the scale phase (default 100,000,000; quick 200,000)")
    parser.add_argument("--scale-symbols", type=int, default=100, help="symbols of the scale seed (default 100)")
    parser.add_argument("--scale-days", type=int, default=90, help="UTC days before today of the scale seed (default 90)")
    parser.add_argument("--scale-ingest-ticks", type=int,
                        help="ticks of each e2e ingest run of the scale phase (default 200,000; quick 10,000)")
    parser.add_argument("--phases", default=",".join(DEFAULT_PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default all but scale)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy record ingest, aggregator (and edge) during the PublishTicks and webhook runs; "
                             "raw stacks go beside the results, the top functions into the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (service logs, data)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"ticks": (300_000, 20_000), "stream_ticks": (150_000, 10_000), "webhook_ticks": (150_000, 5_000),
                "webhook_latency_seconds": (20, 3),
                "clients": (4, 2), "rate": (10_000, 2_000), "sse_clients": (500, 50), "soak_seconds": (60.0, 6.0),
                "query_ticks": (1_040_000, 20_000), "query_requests": (200, 20), "ticker_ticks": (14_400, 300),
                "scale_ticks": (100_000_000, 200_000), "scale_ingest_ticks": (200_000, 10_000)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


def output_paths(out: str | None) -> tuple[Path, Path]:
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path("bench-results") / f"bench-{stamp}.json"
    else:
        path = Path(out)
        if path.suffix != ".json":
            path = path / "results.json"
    return path, path.with_suffix(".png")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_profile(args: argparse.Namespace, stack: Any, phase: str, names: tuple[str, ...]) -> Any:
    if not args.profile:
        return None
    from marketdata.bench.profile import Profiler, py_spy

    if py_spy() is None:
        log("--profile: py-spy not found (pip install py-spy); not profiling")
        return None
    pids = {name: stack.services[name].pid for name in names if name in stack.services}
    return Profiler(args.json_path.parent / f"{args.json_path.stem}-profiles", pids, phase)


async def measure(args: argparse.Namespace, stack: Any, results: dict[str, Any]) -> None:
    from marketdata.bench import measure as m
    from marketdata.bench.data import make_batches

    symbols = [f"BN{i:02d}USD" for i in range(20)]
    await m.register_symbols(stack.services["ingest"].address, symbols)
    aggregator = m.Aggregator(stack.services["aggregator"].address)
    sampler = m.Sampler(stack)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    results["memory"] = {"start": stack.rss()}
    edge = stack.services.get("edge")
    try:
        batches = make_batches("B", symbols, args.ticks, args.batch, seed=1)
        if "ingest" in args.phases:
            ingest: dict[str, Any] = {}
            results["ingest"] = ingest
            payloads = [b.request_bytes() for b in batches]
            counts = [len(b) for b in batches]
            log(f"e2e PublishTicks: {args.ticks:,} ticks")
            profiler = start_profile(args, stack, "grpc_batched", ("ingest", "aggregator"))
            ingest["grpc_batched"] = await m.end_to_end(
                "grpc_batched", m.send_batched, stack.services["ingest"].address, payloads, counts, args.clients,
                aggregator, sampler, timeout=max(60.0, args.ticks / 2000))
            if profiler:
                results.setdefault("profiles", {})["grpc_batched"] = profiler.stop()
            del payloads
            stream = make_batches("S", symbols, args.stream_ticks, args.batch, seed=2)
            log(f"e2e StreamTicks: {args.stream_ticks:,} ticks")
            ingest["grpc_stream"] = await m.end_to_end(
                "grpc_stream", m.send_streaming, stack.services["ingest"].address, [b.request_bytes() for b in stream],
                [len(b) for b in stream], args.clients, aggregator, sampler, timeout=max(60.0, args.stream_ticks / 2000))
            if edge is not None:
                hooks = make_batches("W", symbols, args.webhook_ticks, args.batch, seed=3)
                log(f"e2e REST webhook: {args.webhook_ticks:,} ticks")
                profiler = start_profile(args, stack, "webhook", ("edge",))
                ingest["webhook"] = await m.end_to_end(
                    "webhook", m.send_webhook, f"http://{edge.address}", [b.webhook_json() for b in hooks],
                    [len(b) for b in hooks], args.clients, aggregator, sampler,
                    timeout=max(60.0, args.webhook_ticks / 1000))
                if profiler:
                    results.setdefault("profiles", {})["webhook"] = profiler.stop()
                await aggregator.wait_idle()
                paced = make_batches("L", symbols, WEBHOOK_RATE * args.webhook_latency_seconds,
                                     WEBHOOK_LATENCY_BATCH, seed=4)
                log(f"REST webhook latency: {WEBHOOK_LATENCY_BATCH}-tick calls at {WEBHOOK_RATE:,} ticks/s "
                    f"for {args.webhook_latency_seconds} s")
                results["webhook_latency"] = await m.webhook_latency(
                    f"http://{edge.address}", [b.webhook_json() for b in paced], WEBHOOK_RATE, WEBHOOK_LATENCY_BATCH)
                await aggregator.wait_idle()
                paced = make_batches("H", symbols, WEBHOOK_RATE * args.webhook_latency_seconds,
                                     WEBHOOK_LATENCY_BATCH, seed=6)
                log("REST webhook latency through httpx, the same paced load")
                results["webhook_latency_httpx"] = await m.webhook_latency(
                    f"http://{edge.address}", [b.webhook_json() for b in paced], WEBHOOK_RATE, WEBHOOK_LATENCY_BATCH,
                    client="httpx")
                await aggregator.wait_idle()
                paced = make_batches("G", symbols, WEBHOOK_RATE * args.webhook_latency_seconds,
                                     WEBHOOK_LATENCY_BATCH, seed=5)
                log("PublishTicks latency, the same paced load")
                results["publish_latency"] = await m.publish_latency(
                    stack.services["ingest"].address, [b.request_bytes() for b in paced], WEBHOOK_RATE,
                    WEBHOOK_LATENCY_BATCH)
        results["memory"]["load_peak"] = sampler.peak(("grpc_batched", "grpc_stream", "webhook"))
        if "ceilings" in args.phases:
            ceilings: dict[str, Any] = {}
            results["ceilings"] = ceilings
            await aggregator.wait_idle()
            sampler.phase = "ceilings"
            for name, run in (
                ("rollup_sql", lambda: m.ceiling_rollup_sql(stack.database_url, batches)),
                ("rollup_sql_2_connections", lambda: m.ceiling_rollup_sql(stack.database_url, batches, 2, "D")),
                # A proposal measured on equal terms: empty copies of the tables, as they are and with symbol
                # columns COLLATE "C".
                ("rollup_sql_empty_tables", lambda: m.ceiling_rollup_sql(
                    stack.database_url, batches, 1, "C", schema=f"bench_default_{stack.run_id}")),
                ("rollup_sql_empty_tables_symbol_collate_c", lambda: m.ceiling_rollup_sql(
                    stack.database_url, batches, 1, "C", schema=f"bench_collate_c_{stack.run_id}", collate_c=True)),
                ("aggregator_sql", lambda: m.ceiling_aggregator_sql(stack.database_url, batches,
                                                                    f"BENCHSQL{stack.run_id}")),
                ("copy", lambda: m.ceiling_copy(stack.database_url, batches, f"bench_copy_{stack.run_id}")),
                ("jetstream_publish", lambda: m.ceiling_jetstream(stack.nats_url, batches, f"BENCHRAW{stack.run_id}",
                                                                  f"benchraw{stack.run_id}", args.clients)),
            ):
                log(f"ceiling {name}")
                try:
                    ceilings[name] = await asyncio.wait_for(run(), timeout=max(120.0, args.ticks / 1000))
                except Exception as exc:  # noqa: BLE001 - report it and go on
                    ceilings[name] = {"ticks": args.ticks, "ticks_per_second": None, "error": repr(exc)}
            sampler.phase = "idle"
        batches = []  # the ingest batches are not needed any more: their memory goes before the live phase
        if "live" in args.phases:
            # The ingest runs and ceilings just wrote ~2M rows: vacuum them now rather than have autovacuum
            # start on them (sharing the 2 cores) in the middle of the latency measurement.
            await aggregator.wait_idle()
            settle = await m.settle_database(stack.database_url)
            log(f"live: {args.rate:,} ticks/s for {args.soak_seconds:.0f}s"
                + (f" with {args.sse_clients} SSE clients" if edge is not None else " (no edge: no SSE)"))
            results["live"] = await m.live(stack, symbols, args.rate, args.soak_seconds, args.sse_clients,
                                           aggregator, sampler)
            results["live"]["settle_seconds"] = round(settle, 1)
        if "query" in args.phases and "query" in stack.services:
            log(f"query: seeding {args.query_ticks:,} ticks")
            seed = await m.seed_query_data(stack.database_url, args.query_ticks)
            log(f"query: {args.query_requests} requests per case")
            latency = await m.query_latency(stack.services["query"].address,
                                            f"http://{edge.address}" if edge is not None else None,
                                            args.query_requests)
            results["query"] = {"seed": seed, "latency": latency,
                                "explain": await m.explain_candles(stack.database_url)}
        if "ticker" in args.phases and "query" in stack.services:
            log(f"ticker: seeding {args.ticker_ticks:,} ticks for each of {len(m.TICKER_SYMBOLS)} symbols")
            seed = await m.seed_ticker_data(stack.database_url, args.ticker_ticks)
            log(f"ticker: {args.query_requests} requests per case")
            latency = await m.ticker_latency(stack.services["query"].address,
                                             f"http://{edge.address}" if edge is not None else None,
                                             args.query_requests)
            results["ticker"] = {"seed": seed, "latency": latency}
        if "scale" in args.phases and "query" in stack.services:
            from marketdata.bench import scale

            await aggregator.wait_idle()
            results["scale"] = await scale.run(stack, args, aggregator, sampler, log)
    finally:
        stop.set()
        await sampling
        await aggregator.close()
        results["rss_timeline"] = sampler.rss
        exited = {name: service.process.returncode for name, service in stack.services.items()
                  if service.process is not None and service.process.poll() is not None}
        if exited:
            results["services_exited"] = exited
            log(f"services that exited during the run (exit codes): {exited}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sigterm_interrupts()
    from marketdata.bench import report
    from marketdata.bench.stack import BenchStack, available

    json_path, png_path = output_paths(args.out)
    args.json_path = json_path
    started = time.monotonic()
    results: dict[str, Any] = {"started": datetime.now(timezone.utc).isoformat(), "quick": args.quick,
                               "config": {k: v for k, v in vars(args).items() if k not in ("out", "json_path")},
                               "machine": report.machine()}
    stack = BenchStack(keep=args.keep)
    failed = interrupted = False
    try:
        log(f"starting NATS and PostgreSQL (work dir {stack.work_dir})")
        stack.start_infra()
        results["machine"].update(asyncio.run(stack.server_versions()))
        names = ["ingest", "aggregator"]
        if available("query"):
            names.append("query")
        for name in names:
            stack.start_service(name)
        for name in names:
            stack.services[name].wait_ready()
        if available("edge") and "query" in stack.services:
            stack.start_service("edge").wait_ready()
        results["services"] = sorted(stack.services)
        log(f"services ready: {', '.join(sorted(stack.services))}")
        asyncio.run(measure(args, stack, results))
    except KeyboardInterrupt:
        interrupted = True
        results["error"] = "interrupted"
        log("interrupted")
    except BaseException as exc:
        failed = True
        stack.keep = True
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"failed: {results['error']} (logs kept in {stack.work_dir})")
    finally:
        with signals_ignored():
            log("stopping")
            stack.stop()
            results["seconds"] = round(time.monotonic() - started, 1)
            results["targets"] = report.targets(results)
            results["summary"] = report.print_table(results)
            report.write_json(results, json_path)
            json_path.with_suffix(".md").write_text(report.markdown(results) + "\n")
            report.plot(results, png_path)
            log(f"wrote {json_path}, {png_path} and {json_path.with_suffix('.md')} in {results['seconds']:.0f}s")
    if interrupted:
        sys.exit(130)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
