"""Feeder: realistic synthetic trades (GBM prices, Poisson arrivals with bursts, heavy-tailed sizes) sent live
to ingest over gRPC (PublishTicks / StreamTicks) or to the edge's REST webhook."""
