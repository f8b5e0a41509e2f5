"""`marketdata feeder`: realistic synthetic trades, sent live to ingest (gRPC) or to the edge's webhook (REST).

Every option has an environment fallback (FEEDER_RATE, FEEDER_SYMBOLS, FEEDER_DURATION, FEEDER_SEED,
FEEDER_API_KEY, FEEDER_TRANSPORT, FEEDER_BATCH_INTERVAL, FEEDER_EDGE_URL); ingest is found at INGEST_ADDR.
"""

from __future__ import annotations

import argparse
import os
import sys

from marketdata.common import rules
from marketdata.common.config import Settings, SettingsError
from marketdata.common.runner import run_service
from marketdata.feeder.feeder import FeederOptions, serve
from marketdata.feeder.generator import DEFAULT_SPECS, DEFAULT_SYMBOLS, spec_for



def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        sys.exit(f"marketdata feeder: configuration error: {name}={raw!r}: must be a number")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="marketdata feeder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="known symbols (own price level and volatility): " + ", ".join(DEFAULT_SPECS)
               + "; any other valid symbol gets a plausible price level of its own")
    parser.add_argument("--rate", type=float, default=_env_float("FEEDER_RATE") or 50.0,
                        help="average ticks per second over all symbols (default 50; FEEDER_RATE)")
    parser.add_argument("--symbols", default=env.get("FEEDER_SYMBOLS") or ",".join(DEFAULT_SYMBOLS),
                        help="comma-separated symbols (default %(default)s; FEEDER_SYMBOLS)")
    parser.add_argument("--duration", type=float, default=_env_float("FEEDER_DURATION"),
                        help="seconds to run (default: until stopped; FEEDER_DURATION)")
    parser.add_argument("--seed", type=int, default=int(env["FEEDER_SEED"]) if env.get("FEEDER_SEED") else None,
                        help="random seed: the same seed gives the same prices, sizes and sides (FEEDER_SEED)")
    parser.add_argument("--batch-interval", type=float, default=_env_float("FEEDER_BATCH_INTERVAL") or 0.2,
                        help="seconds between batches (default 0.2; FEEDER_BATCH_INTERVAL)")
    parser.add_argument("--transport", choices=("grpc", "stream", "rest"),
                        default=env.get("FEEDER_TRANSPORT") or "grpc",
                        help="grpc: IngestService.PublishTicks; stream: IngestService.StreamTicks; "
                             "rest: POST /api/v1/webhooks/ticks on the edge (default grpc; FEEDER_TRANSPORT)")
    parser.add_argument("--api-key", default=env.get("FEEDER_API_KEY"),
                        help="x-api-key to send (default: the first of API_KEYS; FEEDER_API_KEY)")
    parser.add_argument("--ingest-addr", default=None, help="host:port of ingest (default INGEST_ADDR)")
    parser.add_argument("--edge-url", default=env.get("FEEDER_EDGE_URL"),
                        help="edge base URL for --transport rest (default http://127.0.0.1:$EDGE_PORT; FEEDER_EDGE_URL)")
    parser.add_argument("--no-register", action="store_true",
                        help="do not UpsertSymbols at start (the symbols must exist and be active)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="live one-line progress (default when stdout is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="plain periodic log lines")
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error("--rate must be > 0")
    if args.duration is not None and not args.duration > 0:
        parser.error("--duration must be > 0")
    if not 0.01 <= args.batch_interval <= 60:
        parser.error("--batch-interval must be between 0.01 and 60 seconds")
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    bad = [s for s in symbols if not rules.is_symbol(s)]
    if not symbols or bad:
        parser.error(f"--symbols: {', '.join(bad) or 'empty'}: a symbol is {rules.SYMBOL_RULE_TEXT}")
    args.symbols = list(dict.fromkeys(symbols))
    return args


def options_from(args: argparse.Namespace, settings: Settings) -> FeederOptions:
    api_key = args.api_key or next(iter(settings.api_keys), None)
    if not api_key:
        raise SettingsError("FEEDER_API_KEY is not set: give the key to send in x-api-key (FEEDER_API_KEY, "
                            "--api-key, or API_KEYS whose first key is sent), or run `marketdata dev`, which sets one")
    return FeederOptions(
        specs=[spec_for(s) for s in args.symbols],
        api_key=api_key,
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        batch_interval=args.batch_interval,
        transport=args.transport,
        ingest_addr=args.ingest_addr or settings.ingest_addr,
        edge_url=args.edge_url or f"http://127.0.0.1:{settings.edge_port}",
        progress=args.progress,
        register_symbols=not args.no_register,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def run(settings: Settings) -> None:
        await serve(settings, options_from(args, settings))

    run_service("feeder", run)


if __name__ == "__main__":
    main()
