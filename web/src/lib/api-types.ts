// Wire shapes of the edge's JSON (the protobuf JSON mapping of marketdata.v1):
// lowerCamelCase names, int64 as strings, Timestamps as RFC 3339 strings in UTC,
// and an unset `optional` field (sma10) absent rather than null.

export interface ApiSymbol {
  symbol: string;
  base: string;
  quote: string;
  active: boolean;
}

export interface ApiSymbolsResponse {
  items?: ApiSymbol[];
}

export type ApiSide = "SIDE_UNSPECIFIED" | "SIDE_BUY" | "SIDE_SELL";

export interface ApiTick {
  symbol: string;
  price: number;
  size: number;
  eventTime: string;
  tradeId: string;
  side: ApiSide;
  source: string;
}

export interface ApiCandle {
  symbol: string;
  /** Start of the interval, RFC 3339 UTC. */
  time: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  /** int64, so a JSON string. */
  trades: string;
  vwap: number;
  /** Absent until 10 candles exist at the interval. */
  sma10?: number;
}

export interface ApiHistoryResponse {
  symbol: string;
  view: string;
  interval: string;
  candles?: ApiCandle[];
}

/** One `event: update` of /realtime/ticks. */
export interface ApiLiveUpdate {
  symbol: string;
  lastTick?: ApiTick;
  /** The committed 1-minute candle of `lastTick` (never carries sma10). */
  candle?: ApiCandle;
  commitTime: string;
}

/** RFC 9457 application/problem+json body. */
export interface ApiProblem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
}
