"""`marketdata dev`: the whole platform locally with one command (embedded NATS and PostgreSQL when no URLs
are given), as supervised child processes."""
