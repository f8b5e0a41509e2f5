import { useEffect, useRef, useState } from "react";

/**
 * What an SSE connection is doing, straight from the EventSource:
 * - connecting: first attempt, not open yet;
 * - live: open (readyState OPEN);
 * - reconnecting: the stream broke and a new attempt is under way (readyState CONNECTING);
 * - offline: the browser gave up (readyState CLOSED, e.g. an HTTP error); we retry with backoff.
 */
export type ConnectionStatus = "connecting" | "live" | "reconnecting" | "offline";

export interface EventStreamHandlers<T> {
  onMessage(data: T): void;
  /** Events may have been missed: the stream reopened after a break, or the server sent `resync`. */
  onGap(): void;
}

const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

/**
 * One EventSource on `url` (null: none), delivering the JSON data of its `event` frames;
 * another URL opens a new EventSource. Used for /realtime/ticks (the chart) and
 * /realtime/ticker (the watchlist).
 */
export function useEventStream<T>(url: string | null, event: string, handlers: EventStreamHandlers<T>): ConnectionStatus {
  const [status, setStatus] = useState<ConnectionStatus>("connecting");
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;

  useEffect(() => {
    if (!url) return;
    let source: EventSource | null = null;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    let retryDelay = FIRST_RETRY_MS;
    let interrupted = false;

    const connect = () => {
      retryTimer = undefined;
      const es = new EventSource(url);
      source = es;
      setStatus(interrupted ? "reconnecting" : "connecting");

      es.onopen = () => {
        retryDelay = FIRST_RETRY_MS;
        setStatus("live");
        if (interrupted) handlersRef.current.onGap();
        interrupted = false;
      };
      es.onerror = () => {
        interrupted = true;
        if (es.readyState === EventSource.CONNECTING) {
          setStatus("reconnecting"); // the browser retries by itself
          return;
        }
        es.close();
        setStatus("offline");
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, MAX_RETRY_MS);
      };
      es.addEventListener(event, (message) => {
        handlersRef.current.onMessage(JSON.parse((message as MessageEvent<string>).data) as T);
      });
      es.addEventListener("resync", () => handlersRef.current.onGap());
    };

    // Back online: do not sit out the remaining backoff.
    const retryNow = () => {
      if (retryTimer === undefined) return;
      clearTimeout(retryTimer);
      connect();
    };

    connect();
    window.addEventListener("online", retryNow);
    return () => {
      window.removeEventListener("online", retryNow);
      clearTimeout(retryTimer);
      source?.close();
    };
  }, [url, event]);

  return status;
}
