"""`marketdata <command>`: one console command with a subcommand per service and tool."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "ingest": "gRPC IngestService: validates ticks and publishes them to JetStream",
    "aggregator": "JetStream consumer writing ticks and rollups to PostgreSQL (+ AggregatorService)",
    "query": "gRPC QueryService: symbols, latest, history with SMA10, live stream",
    "edge": "HTTP edge: REST, SSE, dashboard and API docs",
    "feeder": "synthetic ticks for demos and load",
    "migrate": "apply the SQL migrations in migrations/",
    "retention": "create partitions ahead and drop expired ones now (--dry-run lists them)",
    "dev": "run the whole platform locally (embedded NATS and PostgreSQL when no URLs are given)",
    "bench": "benchmark the platform against its targets and ceilings",
    "codegen": "regenerate the code, descriptor set and OpenAPI document from proto/",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: marketdata <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        sys.exit(f"marketdata: unknown command {command!r}\n\n{usage()}")
    module = importlib.import_module(f"marketdata.{command}.__main__")
    module.main(rest)


if __name__ == "__main__":
    main()
