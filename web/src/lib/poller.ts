// Loading a list that must eventually arrive (the active symbols): retried with a
// growing delay while it fails or comes back empty, refreshed now and then once
// loaded, and retried AT ONCE when the connection is known to be back (the
// browser's `online` event, a stream reopening): the error then clears as soon
// as the badge says live, not up to a backoff later. Pure timing, unit-tested.

export interface PollerOptions<T> {
  load(signal: AbortSignal): Promise<readonly T[]>;
  onLoaded(items: readonly T[]): void;
  onFailed(error: Error): void;
  firstRetryMs: number;
  maxRetryMs: number;
  /** Reload of a non-empty list. */
  refreshMs: number;
}

export interface Poller {
  start(): void;
  /** The connection is back: load now (aborting a load that hangs), with the backoff reset. */
  retryNow(): void;
  stop(): void;
}

export function createPoller<T>(options: PollerOptions<T>): Poller {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let request: AbortController | null = null;
  let delay = options.firstRetryMs;
  let stopped = false;

  const schedule = (ms: number) => {
    clearTimeout(timer);
    timer = setTimeout(() => void run(), ms);
  };
  const retryLater = () => {
    schedule(delay);
    delay = Math.min(delay * 2, options.maxRetryMs);
  };

  const run = async () => {
    clearTimeout(timer);
    request?.abort();
    const controller = new AbortController();
    request = controller;
    try {
      const items = await options.load(controller.signal);
      if (controller.signal.aborted || stopped) return;
      request = null;
      options.onLoaded(items);
      if (items.length === 0) retryLater();
      else {
        delay = options.firstRetryMs;
        schedule(options.refreshMs); // listed or delisted meanwhile
      }
    } catch (error) {
      if (controller.signal.aborted || stopped) return;
      request = null;
      options.onFailed(error as Error);
      retryLater();
    }
  };

  return {
    start: () => void run(),
    retryNow: () => {
      if (stopped) return;
      delay = options.firstRetryMs;
      void run();
    },
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      request?.abort();
    },
  };
}
