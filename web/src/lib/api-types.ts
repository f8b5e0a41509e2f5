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
  trades: number;
  vwap: number;
  /** Absent until 10 candles exist at the interval. */
  sma10?: number;
  quoteVolume?: number;
  takerBuyVolume?: number;
  takerBuyQuoteVolume?: number;
  /** End of the interval (exclusive), RFC 3339 UTC. */
  closeTime?: string;
  closed?: boolean;
}

export interface ApiHistoryResponse {
  symbol: string;
  view: string;
  interval: string;
  candles?: ApiCandle[];
  /** Set when the page is full: the next page (older, for order=desc) with the same parameters. */
  nextPageToken?: string;
  timeZone?: string;
}

/** Rolling-window statistics of one symbol (GET /api/v1/ticker/24hr); price fields absent without trades. */
export interface ApiTicker {
  symbol: string;
  windowSize?: string;
  openTime?: string;
  closeTime?: string;
  trades?: number;
  last?: number;
  open?: number;
  high?: number;
  low?: number;
  change?: number;
  changePercent?: number;
  volume?: number;
  quoteVolume?: number;
  vwap?: number;
  firstTradeTime?: string;
  lastTradeTime?: string;
}

export interface ApiTickerResponse {
  items?: ApiTicker[];
}

/** One `event: update` of /realtime/ticks. */
export interface ApiLiveUpdate {
  symbol: string;
  lastTick?: ApiTick;
  /** The committed 1-minute candle of `lastTick`, with its SMA10 once 10 minutes exist. */
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
