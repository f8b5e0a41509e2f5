import type { FeedState } from "../lib/ticker";

const DESCRIPTIONS: Record<FeedState, string> = {
  connecting: "Connecting to the live stream",
  live: "Receiving live updates",
  stale: "Connected, but the symbol has not traded for several intervals",
  reconnecting: "Live stream interrupted, reconnecting",
  offline: "Live stream unavailable, retrying",
};

/** Feed state, announced politely to screen readers when it changes. */
export function ConnectionBadge({ state }: { state: FeedState }) {
  return (
    <div className={`status status-${state}`} role="status" title={DESCRIPTIONS[state]}>
      <span className="status-dot" aria-hidden="true" />
      <span data-testid="status">{state}</span>
    </div>
  );
}
