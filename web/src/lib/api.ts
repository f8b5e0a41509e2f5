// REST client of the edge. Root-relative URLs only: the edge serves this app
// from the same origin as the API.

import type {
  ApiHistoryResponse,
  ApiProblem,
  ApiSymbol,
  ApiSymbolsResponse,
  ApiTicker,
  ApiTickerResponse,
} from "./api-types";
import { type Candle, parseCandle } from "./candles";

/** A non-2xx answer, carrying the application/problem+json detail when there is one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

async function getJson<T>(url: string, signal?: AbortSignal): Promise<T> {
  const response = await fetch(url, { signal, headers: { accept: "application/json" } });
  if (!response.ok) {
    const problem = (await response.json().catch(() => null)) as ApiProblem | null;
    const reason = problem?.detail ?? problem?.title ?? response.statusText;
    throw new ApiError(response.status, `${response.status} ${reason}`.trim());
  }
  return (await response.json()) as T;
}

export async function fetchSymbols(signal?: AbortSignal): Promise<ApiSymbol[]> {
  const body = await getJson<ApiSymbolsResponse>("/api/v1/symbols?active=true", signal);
  return [...(body.items ?? [])].sort((a, b) => a.symbol.localeCompare(b.symbol));
}

export interface HistoryQuery {
  interval: string;
  limit: number;
  /** IANA name or fixed offset the candles are aligned in (the API's default is UTC). */
  timeZone?: string;
  /** Inclusive start, UTC seconds: a page walking forward from there. */
  from?: number;
  /** The nextPageToken of the previous page (same other parameters). */
  pageToken?: string;
}

export interface CandlePage {
  candles: Candle[];
  /** Empty when the range holds no more candles in this direction. */
  nextPageToken: string;
}

/** One page of candles, oldest first: the newest ones, or the next older page with `pageToken`. */
export async function fetchCandles(symbol: string, query: HistoryQuery, signal?: AbortSignal): Promise<CandlePage> {
  const params = new URLSearchParams({ view: "ohlc1m", interval: query.interval, limit: String(query.limit) });
  if (query.timeZone) params.set("timeZone", query.timeZone);
  if (query.from !== undefined) params.set("from", new Date(query.from * 1000).toISOString());
  if (query.pageToken) params.set("pageToken", query.pageToken);
  const url = `/api/v1/ticks/${encodeURIComponent(symbol)}/history?${params}`;
  const body = await getJson<ApiHistoryResponse>(url, signal);
  return { candles: (body.candles ?? []).map(parseCandle), nextPageToken: body.nextPageToken ?? "" };
}

/** 24h rolling statistics of the given symbols (all active ones when empty). */
export async function fetchTickers(symbols: readonly string[], signal?: AbortSignal): Promise<ApiTicker[]> {
  const params = new URLSearchParams();
  if (symbols.length > 0) params.set("symbol", symbols.join(","));
  const body = await getJson<ApiTickerResponse>(`/api/v1/ticker/24hr?${params}`, signal);
  return body.items ?? [];
}
