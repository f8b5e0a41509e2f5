"""marketdata: realtime market data over gRPC, NATS JetStream and PostgreSQL."""

__version__ = "0.1.0"
