import type { ConnectionStatus } from "../hooks/useLiveStream";

const DESCRIPTIONS: Record<ConnectionStatus, string> = {
  connecting: "Connecting to the live stream",
  live: "Receiving live updates",
  reconnecting: "Live stream interrupted, reconnecting",
  offline: "Live stream unavailable, retrying",
};

/** Live stream state, announced politely to screen readers when it changes. */
export function ConnectionBadge({ status }: { status: ConnectionStatus }) {
  return (
    <div className={`status status-${status}`} role="status" title={DESCRIPTIONS[status]}>
      <span className="status-dot" aria-hidden="true" />
      <span data-testid="status">{status}</span>
    </div>
  );
}
