import { useSyncExternalStore } from "react";
import type { ColorScheme } from "../lib/theme";

const DARK = "(prefers-color-scheme: dark)";

function subscribe(onChange: () => void): () => void {
  const query = window.matchMedia(DARK);
  query.addEventListener("change", onChange);
  return () => query.removeEventListener("change", onChange);
}

/** The system colour scheme, following live switches. */
export function useColorScheme(): ColorScheme {
  return useSyncExternalStore(subscribe, () => (window.matchMedia(DARK).matches ? "dark" : "light"));
}
