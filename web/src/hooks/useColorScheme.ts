import { useCallback, useSyncExternalStore } from "react";
import type { ColorScheme } from "../lib/theme";

/** Whether a media query matches, following live changes. */
export function useMediaQuery(query: string): boolean {
  const subscribe = useCallback(
    (onChange: () => void) => {
      const list = window.matchMedia(query);
      list.addEventListener("change", onChange);
      return () => list.removeEventListener("change", onChange);
    },
    [query],
  );
  return useSyncExternalStore(subscribe, () => window.matchMedia(query).matches);
}

/** The system colour scheme, following live switches. */
export function useColorScheme(): ColorScheme {
  return useMediaQuery("(prefers-color-scheme: dark)") ? "dark" : "light";
}
