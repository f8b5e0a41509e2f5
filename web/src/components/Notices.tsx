interface NoticesProps {
  notices: readonly string[];
  onDismiss(): void;
}

/** What a link asked for but could not be shown, and what is shown instead. */
export function Notices({ notices, onDismiss }: NoticesProps) {
  if (notices.length === 0) return null;
  return (
    <div className="notice" role="alert" data-testid="notice">
      <ul>
        {notices.map((notice) => (
          <li key={notice}>{notice}</li>
        ))}
      </ul>
      <button type="button" aria-label="Dismiss" onClick={onDismiss}>
        ×
      </button>
    </div>
  );
}
