"""The query service: the read side of the platform over gRPC (marketdata.v1.QueryService).

ListSymbols, GetLatest and GetHistory read PostgreSQL (ticks_history, ohlc_1m, metrics_1m); candles at
5m/15m/1h/1d are derived from the stored 1-minute candles at query time and every candle carries an SMA10
computed in SQL with a window function. WatchTicks relays the aggregator's LiveUpdate messages from the
core NATS subjects <prefix>.live.<SYMBOL> to gRPC streams.
"""
