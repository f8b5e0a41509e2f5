"""Plumbing shared by every service: settings, logging, gRPC bootstrap, NATS, PostgreSQL, metrics."""
