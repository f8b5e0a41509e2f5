// REST client of the edge. Root-relative URLs only: the edge serves this app
// from the same origin as the API.

import type { ApiHistoryResponse, ApiProblem, ApiSymbol, ApiSymbolsResponse } from "./api-types";
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
  /** Inclusive start, UTC seconds. */
  from?: number;
}

export async function fetchCandles(symbol: string, query: HistoryQuery, signal?: AbortSignal): Promise<Candle[]> {
  const params = new URLSearchParams({ view: "ohlc1m", interval: query.interval, limit: String(query.limit) });
  if (query.from !== undefined) params.set("from", new Date(query.from * 1000).toISOString());
  const url = `/api/v1/ticks/${encodeURIComponent(symbol)}/history?${params}`;
  const body = await getJson<ApiHistoryResponse>(url, signal);
  return (body.candles ?? []).map(parseCandle);
}
