"""Ingest: validates ticks and symbols, checks API keys, and makes ticks durable in NATS JetStream."""
