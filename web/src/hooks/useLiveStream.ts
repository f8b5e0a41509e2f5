import { useEffect, useRef, useState } from "react";
import type { ApiLiveUpdate } from "../lib/api-types";

/**
 * What the SSE connection is doing, straight from the EventSource:
 * - connecting: first attempt, not open yet;
 * - live: open (readyState OPEN);
 * - reconnecting: the stream broke and a new attempt is under way (readyState CONNECTING);
 * - offline: the browser gave up (readyState CLOSED, e.g. an HTTP error); we retry with backoff.
 */
export type ConnectionStatus = "connecting" | "live" | "reconnecting" | "offline";

export interface LiveStreamHandlers {
  onUpdate(update: ApiLiveUpdate): void;
  /** Events may have been missed: the stream reopened after a break, or the server sent `resync`. */
  onGap(): void;
}

const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 30_000;

/** Subscribes to /realtime/ticks for one symbol; a new symbol opens a new EventSource. */
export function useLiveStream(symbol: string | null, handlers: LiveStreamHandlers): ConnectionStatus {
  const [status, setStatus] = useState<ConnectionStatus>("connecting");
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;

  useEffect(() => {
    if (symbol === null) return;
    let source: EventSource | null = null;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    let retryDelay = FIRST_RETRY_MS;
    let interrupted = false;

    const connect = () => {
      retryTimer = undefined;
      const es = new EventSource(`/realtime/ticks?symbol=${encodeURIComponent(symbol)}`);
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
      es.addEventListener("update", (event) => {
        handlersRef.current.onUpdate(JSON.parse((event as MessageEvent<string>).data) as ApiLiveUpdate);
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
  }, [symbol]);

  return status;
}
