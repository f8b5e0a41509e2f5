import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createPoller } from "./poller";

describe("a list loaded until it arrives", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  function setup() {
    let failing = true;
    const calls: number[] = [];
    const state = { error: null as string | null, items: [] as string[] };
    const poller = createPoller<string>({
      load: async () => {
        calls.push(Date.now());
        if (failing) throw new Error("Failed to fetch");
        return ["BTCUSDT"];
      },
      onLoaded: (items) => Object.assign(state, { items, error: null }),
      onFailed: (error) => (state.error = error.message),
      firstRetryMs: 2_000,
      maxRetryMs: 30_000,
      refreshMs: 60_000,
    });
    return { poller, calls, state, recover: () => (failing = false) };
  }

  it("retries a failed load with a growing delay", async () => {
    const { poller, calls } = setup();
    poller.start();
    await vi.advanceTimersByTimeAsync(2_000 + 4_000 + 8_000);
    expect(calls.length).toBe(4);
    poller.stop();
  });

  it("clears the error as soon as the connection is back, not a backoff later", async () => {
    const { poller, calls, state, recover } = setup();
    poller.start();
    await vi.advanceTimersByTimeAsync(2_000 + 4_000 + 8_000); // the next retry is 16 s away
    expect(state.error).toBe("Failed to fetch");
    recover();
    poller.retryNow(); // a stream reopened, or the browser is online again
    await vi.advanceTimersByTimeAsync(0);
    expect(state.error).toBeNull();
    expect(state.items).toEqual(["BTCUSDT"]);
    expect(calls.length).toBe(5);
    // Then the normal refresh, no leftover retry.
    await vi.advanceTimersByTimeAsync(59_000);
    expect(calls.length).toBe(5);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls.length).toBe(6);
    poller.stop();
  });

  it("does nothing once stopped", async () => {
    const { poller, calls } = setup();
    poller.start();
    poller.stop();
    poller.retryNow();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls.length).toBe(1);
  });
});
