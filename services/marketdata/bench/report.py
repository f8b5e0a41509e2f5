"""The bench's outputs: the machine, the targets table printed beside each figure and its ceiling, the JSON
results and a PNG plot (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

# Targets of issue 8.
INGEST_TARGET = 100_000
INGEST_CEILING_RATIO = 2 / 3
SSE_P99_TARGET_MS = 50.0
SSE_RATE = 10_000
SSE_CLIENTS = 500
QUERY_P99_TARGET_MS = 5.0
QUERY_MIN_TICKS = 1_000_000
# Issue 14: the same run with 100M ticks stored.
SCALE_MIN_TICKS = 100_000_000
SCALE_INGEST_RATIO = 0.9
SCALE_DROP_INGEST_RATIO = 0.9
TICKER_P99_TARGETS_MS = {"1 symbol": 5.0, "100 symbols": 20.0}
# Targets of issue 16 (the REST webhook).
WEBHOOK_TARGET = 60_000
WEBHOOK_GRPC_RATIO = 0.45
WEBHOOK_EDGE_MS_PER_1K = 15.0
WEBHOOK_P99_TARGET_MS = 15.0


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gib": round(mem_kib / 1024 / 1024, 1), "cpu": model,
            "python": platform.python_version(), "kernel": platform.release()}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def webhook_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The REST webhook against PublishTicks of the same run, the edge's CPU, the paced call latency."""
    ingest = results.get("ingest") or {}
    webhook = ingest.get("webhook") or {}
    grpc = (ingest.get("grpc_batched") or {}).get("ticks_per_second")
    figure = webhook.get("ticks_per_second")
    return {"ticks_per_second": figure, "publish_ticks_per_second": grpc,
            "ratio": round(figure / grpc, 3) if figure and grpc else None,
            "edge_ms_per_1k_ticks": ((webhook.get("cpu") or {}).get("edge") or {}).get("ms_per_1k_ticks"),
            "latency": results.get("webhook_latency"), "httpx_latency": results.get("webhook_latency_httpx"),
            "grpc_latency": results.get("publish_latency")}


def webhook_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    figures = webhook_figures(results)
    if figures["ticks_per_second"]:
        rows.append({"name": "e2e REST webhook vs PublishTicks (same run)", "figure": figures["ticks_per_second"],
                     "unit": "ticks/s", "target": f">= {WEBHOOK_TARGET:,} and >= {WEBHOOK_GRPC_RATIO} of gRPC",
                     "met": bool(figures["ticks_per_second"] >= WEBHOOK_TARGET and figures["ratio"]
                                 and figures["ratio"] >= WEBHOOK_GRPC_RATIO),
                     "ceiling": figures["publish_ticks_per_second"], "ceiling_name": "PublishTicks",
                     "ratio": figures["ratio"]})
    if figures["edge_ms_per_1k_ticks"] is not None:
        rows.append({"name": "REST webhook: edge CPU per 1,000 ticks", "figure": figures["edge_ms_per_1k_ticks"],
                     "unit": "ms", "target": f"<= {WEBHOOK_EDGE_MS_PER_1K:g} ms",
                     "met": figures["edge_ms_per_1k_ticks"] <= WEBHOOK_EDGE_MS_PER_1K, "ceiling": None, "ratio": None})
    latency = figures["latency"]
    if latency and latency.get("p99_ms") is not None:
        full = (latency.get("achieved_rate") or 0) >= 0.95 * latency["offered_rate"] and not latency["errors"]
        httpx_p99 = (figures["httpx_latency"] or {}).get("p99_ms")
        rows.append({"name": f"REST webhook {latency['batch_ticks']}-tick call p99 at "
                             f"{latency.get('achieved_rate') or 0:,.0f} ticks/s",
                     "note": f"through httpx: {httpx_p99:g} ms" if httpx_p99 is not None else "",
                     "figure": latency["p99_ms"], "unit": "ms",
                     "target": f"<= {WEBHOOK_P99_TARGET_MS:g} ms at {latency['offered_rate']:,}/s",
                     "met": bool(full and latency["p99_ms"] <= WEBHOOK_P99_TARGET_MS),
                     "ceiling": (figures["grpc_latency"] or {}).get("p99_ms"), "ceiling_name": "PublishTicks p99",
                     "ratio": None})
    return rows


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target beside its figure, its ceiling and their ratio."""
    rows: list[dict[str, Any]] = []
    ingest = results.get("ingest", {})
    ceilings = results.get("ceilings", {})
    rollup = (ceilings.get("rollup_sql") or {}).get("ticks_per_second")
    rollup2 = (ceilings.get("rollup_sql_2_connections") or {}).get("ticks_per_second")
    for name, label in (("grpc_batched", "e2e ingest, PublishTicks"), ("grpc_stream", "e2e ingest, StreamTicks"),
                        ("webhook", "e2e ingest, REST webhook")):
        figure = (ingest.get(name) or {}).get("ticks_per_second")
        if name not in ingest:
            continue
        ratio = figure / rollup if figure and rollup else None
        rows.append({"name": label, "figure": figure, "unit": "ticks/s", "target": f">= {INGEST_TARGET:,} and >= 2/3 ceiling",
                     "met": bool(figure and figure >= INGEST_TARGET and rollup and figure / rollup >= INGEST_CEILING_RATIO),
                     "ceiling": rollup,
                     "ceiling_name": "rollup SQL", "ratio": None if ratio is None else round(ratio, 3),
                     "ratio_target": f">= {INGEST_CEILING_RATIO:.2f}",
                     "ratio_met": bool(ratio and ratio >= INGEST_CEILING_RATIO),
                     "ratio_2_connections": round(figure / rollup2, 3) if figure and rollup2 else None})
    rows += webhook_targets(results)
    live = results.get("live") or {}
    sse = live.get("sse")
    if sse:
        p99 = sse["ack_to_client"]["p99_ms"]
        conditions = f"{live.get('achieved_rate'):,.0f} ticks/s, {sse['connected']} clients"
        full = (live.get("achieved_rate") or 0) >= 0.95 * SSE_RATE and sse["connected"] >= SSE_CLIENTS
        rows.append({"name": f"tick -> SSE p99 ({conditions})", "figure": p99, "unit": "ms",
                     "target": f"<= {SSE_P99_TARGET_MS:g} ms at {SSE_RATE:,}/s, {SSE_CLIENTS} clients",
                     "met": bool(full and p99 is not None and p99 <= SSE_P99_TARGET_MS),
                     "ceiling": sse["commit_to_client"]["p99_ms"], "ceiling_name": "commit -> client p99",
                     "ratio": None, "full_conditions": full})
    query = results.get("query") or {}
    case = (query.get("latency") or {}).get("grpc ohlc1m 1m")
    if case:
        stored = (query.get("seed") or {}).get("ticks_stored", 0)
        p99 = case["p99_ms"]
        rows.append({"name": f"GetHistory gRPC 500x1m candles+SMA10 p99 ({stored:,} ticks stored)", "figure": p99,
                     "unit": "ms", "target": f"<= {QUERY_P99_TARGET_MS:g} ms with >= 1M ticks",
                     "met": bool(p99 is not None and p99 <= QUERY_P99_TARGET_MS and stored >= QUERY_MIN_TICKS),
                     "ceiling": None, "ratio": None})
    ticker = results.get("ticker") or {}
    for name, limit in TICKER_P99_TARGETS_MS.items():
        case = (ticker.get("latency") or {}).get(f"grpc ticker {name}")
        if case:
            stored = (ticker.get("seed") or {}).get("ticks_stored", 0)
            rows.append({"name": f"GetTicker 24h gRPC {name} p99 ({stored:,} ticks stored)", "figure": case["p99_ms"],
                         "unit": "ms", "target": f"<= {limit:g} ms with >= 1M ticks",
                         "met": bool(case["p99_ms"] <= limit and stored >= QUERY_MIN_TICKS), "ceiling": None,
                         "ratio": None})
    scale = results.get("scale") or {}
    if scale.get("seed"):
        stored = scale["seed"]["ticks"]
        rows.append({"name": f"e2e ingest with {stored:,} ticks stored / empty tables", "figure": scale["ingest_ratio"],
                     "unit": "x", "target": f">= {SCALE_INGEST_RATIO} with >= {SCALE_MIN_TICKS:,} stored",
                     "met": bool(scale["ingest_ratio"] and scale["ingest_ratio"] >= SCALE_INGEST_RATIO
                                 and stored >= SCALE_MIN_TICKS), "ceiling": None, "ratio": None})
        # The target's cases: every interval in UTC (the zone cases, named with their zone, are reported apart).
        utc = {name: case for name, case in scale["history"].items() if len(name.split()) == 3}
        worst = max(utc.items(), key=lambda kv: kv[1]["p99_ms"])
        rows.append({"name": f"GetHistory 500 candles p99, worst of 1m..1w in UTC ({worst[0]}), {stored:,} stored",
                     "figure": worst[1]["p99_ms"], "unit": "ms", "target": f"<= {QUERY_P99_TARGET_MS:g} ms every interval",
                     "met": bool(worst[1]["p99_ms"] <= QUERY_P99_TARGET_MS and stored >= SCALE_MIN_TICKS),
                     "ceiling": None, "ratio": None})
        drop = scale["drop_day"]
        rows.append({"name": f"retention: drop a day ({drop['mb']} MB) during ingest", "figure": drop["seconds"],
                     "unit": "s", "target": f"<= 1 s, ingest >= {SCALE_DROP_INGEST_RATIO} x",
                     "met": bool(drop["seconds"] <= 1 and (scale["ingest_during_drop_ratio"] or 0)
                                 >= SCALE_DROP_INGEST_RATIO), "ceiling": None,
                     "ratio": scale["ingest_during_drop_ratio"]})
    memory = live.get("memory") or {}
    if memory:
        services = {k: v for k, v in memory.items() if k != "nats-server"}
        flat = all(v["flat"] for v in services.values())
        worst = max(services.items(), key=lambda kv: kv[1]["slope_mib_per_min"] or 0) if services else None
        rows.append({"name": f"memory flat over a {live.get('seconds', 0):.0f}s soak at "
                             f"{live.get('achieved_rate') or 0:,.0f} ticks/s",
                     "figure": f"steepest {worst[0]} {worst[1]['slope_mib_per_min']:+.2f} MiB/min" if worst else None,
                     "unit": "", "target": "flat over 10 min at 10,000/s",
                     "met": flat and (live.get("seconds") or 0) >= 590, "flat": flat, "ceiling": None, "ratio": None})
    return rows


def print_table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(f"machine: {m['cores']} cores, {m['ram_gib']} GiB, {m['cpu']}; Python {m['python']}, "
                 f"PostgreSQL {m.get('postgresql', '?')}, nats-server {m.get('nats_server', '?')}")
    lines.append("")
    lines.append(f"{'throughput (ticks/s)':50} {'figure':>12} {'acked/s':>12}  notes")
    for name, item in (results.get("ingest") or {}).items():
        lines.append(f"{'e2e ' + name:50} {_fmt(item.get('ticks_per_second')):>12} "
                     f"{_fmt(item.get('ack_ticks_per_second')):>12}  {item['ticks']:,} ticks, "
                     f"{item['batch_ticks']:,}/batch, {item['clients']} clients" +
                     (f"  ERROR {item['error']}" if item.get("error") else ""))
    for name, item in (results.get("ingest") or {}).items():
        cpu = item.get("cpu") or {}
        if cpu:
            lines.append(f"  cpu {name}: " + ", ".join(f"{k} {v['cores']:.2f} cores/{v['ms_per_1k_ticks']:.1f} ms per 1k"
                                                   for k, v in cpu.items() if v and v.get("cores") is not None))
    for name, item in (results.get("ceilings") or {}).items():
        lines.append(f"{'ceiling ' + name:50} {_fmt(item.get('ticks_per_second')):>12} {'':>12}  "
                     f"{item['ticks']:,} ticks" + (f"  ERROR {item['error']}" if item.get("error") else ""))
    live = results.get("live") or {}
    if live:
        lines.append("")
        lines.append(f"live: {live['achieved_rate']:,.0f} ticks/s for {live['seconds']:.0f}s, "
                     f"{live['ticks_committed']:,}/{live['ticks_sent']:,} committed, ingest ack p50/p99 "
                     f"{_fmt(live['ingest_ack']['p50_ms'])}/{_fmt(live['ingest_ack']['p99_ms'])} ms")
        if live.get("postgres_activity"):
            lines.append(f"  postgres during the run: {live['postgres_activity']}"
                         + (f" (VACUUM ANALYZE before it: {live['settle_seconds']:.1f}s)" if live.get("settle_seconds") else ""))
        cpu = live.get("cpu") or {}
        lines.append("  cpu: " + ", ".join(f"{k} {v['cores']:.2f} cores" for k, v in cpu.items()
                                          if v and v.get("cores") is not None))
        sse = live.get("sse")
        if sse:
            a, c = sse["ack_to_client"], sse["commit_to_client"]
            lines.append(f"  SSE ({sse['connected']} clients, {a['count']:,} events): ack->client p50/p99/p99.9 "
                         f"{_fmt(a['p50_ms'])}/{_fmt(a['p99_ms'])}/{_fmt(a['p999_ms'])} ms; commit->client "
                         f"p50/p99 {_fmt(c['p50_ms'])}/{_fmt(c['p99_ms'])} ms")
    query = results.get("query") or {}
    if query.get("latency"):
        lines.append("")
        lines.append(f"query latency (ms, {query['seed']['ticks_stored']:,} ticks stored)   "
                     f"{'p50':>8} {'p99':>8}  rows")
        for name, item in query["latency"].items():
            lines.append(f"  {name:40} {_fmt(item['p50_ms']):>8} {_fmt(item['p99_ms']):>8}  {item['rows']}")
        for interval, plan in (query.get("explain") or {}).items():
            lines.append(f"  EXPLAIN candles {interval}:")
            lines.extend(f"    {line}" for line in plan["key_lines"][:8])
    ticker = results.get("ticker") or {}
    if ticker.get("latency"):
        seed = ticker["seed"]
        lines.append("")
        lines.append(f"ticker latency (ms, 24h window, {seed['ticks_stored']:,} ticks stored, "
                     f"{seed['minute_rows_per_symbol']:,} minute rows per symbol)   {'p50':>8} {'p99':>8}  rows")
        for name, item in ticker["latency"].items():
            lines.append(f"  {name:40} {_fmt(item['p50_ms']):>8} {_fmt(item['p99_ms']):>8}  {item['rows']}")
    for phase, profiles in (results.get("profiles") or {}).items():
        for name, summary in profiles.items():
            lines.append(f"profile {phase} {name} ({summary['samples']} samples), self time: " + "; ".join(
                f"{fn} {pct}%" for fn, pct in summary["top_self"][:6]))
    memory = results.get("memory") or {}
    if memory:
        lines.append("")
        lines.append(f"{'memory (MiB RSS)':20} {'start':>8} {'load peak':>10} {'soak end':>9} {'slope/min':>10}  flat")
        soak = live.get("memory") or {}
        for name, start in (memory.get("start") or {}).items():
            s = soak.get(name, {})
            peak = (memory.get("load_peak") or {}).get(name)
            lines.append(f"{name:20} {_fmt(start / 1024 if start else None):>8} "
                         f"{_fmt(peak / 1024 if peak else None):>10} {_fmt(s.get('end_mib')):>9} "
                         f"{_fmt(s.get('slope_mib_per_min')):>10}  {s.get('flat', 'n/a')}")
    lines.append("")
    lines.append(f"{'target':62} {'figure':>14} {'target':>34} {'ceiling':>10} {'ratio':>6}  met")
    for row in results.get("targets", []):
        figure = _fmt(row["figure"], " " + row["unit"] if row["unit"] else "")
        met = "yes" if row["met"] else "NO"
        if "ratio_met" in row:
            met += f" (>= 100k: {'yes' if (row['figure'] or 0) >= INGEST_TARGET else 'no'}, >= 2/3 ceiling: " \
                   f"{'yes' if row['ratio_met'] else 'no'}; vs 2-connection ceiling {_fmt(row.get('ratio_2_connections'))})"
        if row.get("note"):
            met += f" ({row['note']})"
        lines.append(f"{row['name'][:62]:62} {figure:>14} {row['target'][:34]:>34} {_fmt(row.get('ceiling')):>10} "
                     f"{_fmt(row.get('ratio')):>6}  {met}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 10))
    ax = axes[0]
    for name, item in (results.get("ingest") or {}).items():
        timeline = item.get("timeline") or []
        xs, ys = [], []
        if timeline:
            t0, c0, _ = timeline[0]
            for t1, c1, _ in timeline[1:]:
                if t1 - t0 >= 0.5:  # rates over half-second windows: status polls are not evenly spaced
                    xs.append(t1)
                    ys.append((c1 - c0) / (t1 - t0))
                    t0, c0 = t1, c1
        ax.plot(xs, ys, label=f"e2e {name}")
    live = results.get("live") or {}
    points = live.get("committed_timeline") or []
    if len(points) > 1:
        ax.plot([b[0] for b in points[1:]], [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(points, points[1:])],
                label="soak (committed)")
    ax.axhline(100_000, color="grey", linestyle="--", linewidth=0.8, label="target 100k/s")
    ax.set_ylabel("ticks/s committed")
    ax.set_title("throughput over time")
    ax.legend(fontsize=7)
    ax = axes[1]
    sse = live.get("sse") or {}
    over = sse.get("over_time") or []
    if over:
        ax.plot([o[0] for o in over], [o[1] for o in over], label="p50")
        ax.plot([o[0] for o in over], [o[2] for o in over], label="p99")
        ax.axhline(SSE_P99_TARGET_MS, color="grey", linestyle="--", linewidth=0.8, label="p99 target")
    ax.set_ylabel("tick -> SSE ms (per second)")
    ax.set_title("latency over time (soak)")
    if over:
        ax.legend(fontsize=7)
    ax = axes[2]
    samples = results.get("rss_timeline") or []
    names = sorted({n for _, _, s in samples for n in s})
    for name in names:
        ax.plot([t for t, _, s in samples if s.get(name)], [s[name] / 1024 for t, _, s in samples if s.get(name)],
                label=name)
    ax.set_ylabel("RSS MiB")
    ax.set_xlabel("seconds since start")
    ax.set_title("memory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(results: dict[str, Any], soak: dict[str, Any] | None = None) -> str:
    """The figures of a run as Markdown tables (for docs/benchmarks.md); soak: results of a --soak-seconds 600 run."""
    m = results["machine"]
    out = [f"Run of {results.get('started', '?')[:16].replace('T', ' ')} UTC, `marketdata bench` defaults "
           f"({'quick' if results.get('quick') else 'full'}), {results.get('seconds', 0):.0f} s. Machine: "
           f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, "
           f"PostgreSQL {m.get('postgresql', '?')} (embedded; {m.get('postgresql_settings', '')}), "
           f"nats-server {m.get('nats_server', '?')} (embedded, file storage).", ""]
    ingest = results.get("ingest") or {}
    ceilings = results.get("ceilings") or {}
    rollup = (ceilings.get("rollup_sql") or {}).get("ticks_per_second")
    rollup2 = (ceilings.get("rollup_sql_2_connections") or {}).get("ticks_per_second")
    out += ["| throughput | ticks/s committed | target | ceiling (rollup SQL, 1 conn.) | ratio | vs 2-conn. ceiling | "
            "acked by ingest /s | CPU (cores) |", "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for name, label in (("grpc_batched", "PublishTicks, 4 clients × 5,000"), ("grpc_stream", "StreamTicks, 4 streams × 5,000"),
                        ("webhook", "REST webhook (edge), 4 clients × 5,000")):
        item = ingest.get(name)
        if not item:
            continue
        figure = item.get("ticks_per_second") or 0
        cpu = item.get("cpu") or {}
        cores = ", ".join(f"{k} {v['cores']:.2f}" for k, v in cpu.items() if v and v.get("cores") and k != "total"
                          and v["cores"] >= 0.01)
        out.append(f"| {label} | {_fmt(figure)} | ≥ 100,000 and ≥ ⅔ ceiling | {_fmt(rollup)} | "
                   f"{figure / rollup if rollup else 0:.2f} | {figure / rollup2 if rollup2 else 0:.2f} | "
                   f"{_fmt(item.get('ack_ticks_per_second'))} | {cores}; total {cpu.get('total', {}).get('cores', 0):.2f} "
                   f"({cpu.get('total', {}).get('ms_per_1k_ticks', 0):.1f} CPU-ms per 1,000 ticks) |")
    hook = webhook_figures(results)
    if hook["ticks_per_second"]:
        latency = hook["latency"] or {}
        out += ["", f"REST webhook: {_fmt(hook['ticks_per_second'])} ticks/s committed, {_fmt(hook['ratio'])} of "
                    f"PublishTicks in the same run; edge {_fmt(hook['edge_ms_per_1k_ticks'])} CPU-ms per 1,000 ticks"
                    + (f"; {latency['batch_ticks']}-tick calls offered at {latency['offered_rate']:,} ticks/s "
                       f"(achieved {_fmt(latency.get('achieved_rate'))}): p50 {_fmt(latency.get('p50_ms'))} ms, "
                       f"p99 {_fmt(latency.get('p99_ms'))} ms, {latency['errors']} errors" if latency else "")
                    + (f" (through httpx: p50 {_fmt(hook['httpx_latency'].get('p50_ms'))} ms, "
                       f"p99 {_fmt(hook['httpx_latency'].get('p99_ms'))} ms)" if hook["httpx_latency"] else "")
                    + (f" (PublishTicks under the same load: p50 {_fmt(hook['grpc_latency'].get('p50_ms'))} ms, "
                       f"p99 {_fmt(hook['grpc_latency'].get('p99_ms'))} ms)" if hook["grpc_latency"] else "") + "."]
    out += ["", "| ceiling (same 5,000-tick batches) | ticks/s |", "| --- | ---: |"]
    labels = {"rollup_sql": "rollup SQL (`FOLD_TICKS`), 1 connection",
              "rollup_sql_2_connections": "rollup SQL, 2 connections",
              "rollup_sql_empty_tables": "rollup SQL into empty copies of the tables",
              "rollup_sql_empty_tables_symbol_collate_c": "… the same with `symbol COLLATE \"C\"`",
              "aggregator_sql": "aggregator statement (`COMMIT_BATCH_JOINED`: ledger + ticks_raw + fold), 1 connection",
              "copy": "COPY into a `ticks_raw`-shaped table", "jetstream_publish": "JetStream async publish with acks"}
    for name, item in ceilings.items():
        out.append(f"| {labels.get(name, name)} | {_fmt(item.get('ticks_per_second'))} |")
    live = results.get("live") or {}
    sse = live.get("sse")
    if sse:
        a, c = sse["ack_to_client"], sse["commit_to_client"]
        out += ["", "| tick → SSE | p50 | p99 | p99.9 | target |", "| --- | ---: | ---: | ---: | --- |",
                f"| ack → client, {live['achieved_rate']:,.0f} ticks/s, {sse['connected']} clients, "
                f"{a['count']:,} events | {_fmt(a['p50_ms'])} ms | {_fmt(a['p99_ms'])} ms | {_fmt(a['p999_ms'])} ms | "
                f"p99 ≤ 50 ms |",
                f"| commit → client (edge fan-out + client) | {_fmt(c['p50_ms'])} ms | {_fmt(c['p99_ms'])} ms | "
                f"{_fmt(c['p999_ms'])} ms | |",
                f"| ingest ack (PublishTicks of {live['rate_target'] // 20:,} ticks) | {_fmt(live['ingest_ack']['p50_ms'])} ms | "
                f"{_fmt(live['ingest_ack']['p99_ms'])} ms | {_fmt(live['ingest_ack']['p999_ms'])} ms | |"]
    query = results.get("query") or {}
    if query.get("latency"):
        out += ["", f"| GetHistory, limit 500 ({query['seed']['ticks_stored']:,} ticks stored) | gRPC p50 | gRPC p99 | "
                f"REST p50 | REST p99 | rows |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lat = query["latency"]
        for key in [k[5:] for k in lat if k.startswith("grpc ")]:
            g, r = lat.get("grpc " + key, {}), lat.get("rest " + key, {})
            target = " (target p99 ≤ 5 ms)" if key == "ohlc1m 1m" else ""
            out.append(f"| {key}{target} | {_fmt(g.get('p50_ms'))} | {_fmt(g.get('p99_ms'))} | {_fmt(r.get('p50_ms'))} | "
                       f"{_fmt(r.get('p99_ms'))} | {g.get('rows', '')} |")
    ticker = results.get("ticker") or {}
    if ticker.get("latency"):
        seed = ticker["seed"]
        out += ["", f"| GetTicker, 24h window ({seed['ticks_stored']:,} ticks stored, "
                f"{seed['minute_rows_per_symbol']:,} minute rows per symbol) | gRPC p50 | gRPC p99 | REST p50 | "
                f"REST p99 | target |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        lat = ticker["latency"]
        for name, limit in TICKER_P99_TARGETS_MS.items():
            g, r = lat.get(f"grpc ticker {name}", {}), lat.get(f"rest ticker {name}", {})
            out.append(f"| {name} | {_fmt(g.get('p50_ms'))} | {_fmt(g.get('p99_ms'))} | {_fmt(r.get('p50_ms'))} | "
                       f"{_fmt(r.get('p99_ms'))} | p99 ≤ {limit:g} ms |")
    memory = results.get("memory") or {}
    soak_live = (soak or {}).get("live") or {}
    out += ["", "| memory (RSS MiB) | start | peak under ingest load | after the 60 s live run | slope over it (MiB/min) | "
            + (f"after {soak_live.get('seconds', 0):.0f} s soak | slope over the soak (MiB/min) | flat |"
               if soak_live else "flat |"),
            "| --- | ---: | ---: | ---: | ---: | " + ("---: | ---: | --- |" if soak_live else "--- |")]
    for name, start in (memory.get("start") or {}).items():
        s60 = (live.get("memory") or {}).get(name, {})
        peak = (memory.get("load_peak") or {}).get(name)
        row = (f"| {name} | {_fmt(start / 1024 if start else None)} | {_fmt(peak / 1024 if peak else None)} | "
               f"{_fmt(s60.get('end_mib'))} | {_fmt(s60.get('slope_mib_per_min'))} | ")
        if soak_live:
            s600 = (soak_live.get("memory") or {}).get(name, {})
            row += f"{_fmt(s600.get('end_mib'))} | {_fmt(s600.get('slope_mib_per_min'))} | {s600.get('flat', 'n/a')} |"
        else:
            row += f"{s60.get('flat', 'n/a')} |"
        out.append(row)
    return "\n".join(out)
