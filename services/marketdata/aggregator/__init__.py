"""Aggregator: a durable JetStream consumer that writes ticks and their minute rollups to PostgreSQL."""
