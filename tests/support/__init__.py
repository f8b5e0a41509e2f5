"""Test harness: real NATS and PostgreSQL (given by URL or embedded), real service processes on free ports."""
