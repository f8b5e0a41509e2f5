"""Versioned SQL migrations from migrations/: recorded, checksummed, one transaction each, safe to run concurrently."""
