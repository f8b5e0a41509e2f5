import { useCallback, useState } from "react";

const STORAGE_KEY = "marketdata.favourites";

function load(): Set<string> {
  try {
    const stored: unknown = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? "[]");
    return new Set(Array.isArray(stored) ? stored.filter((item): item is string => typeof item === "string") : []);
  } catch {
    return new Set();
  }
}

/** Favourite symbols, kept in localStorage across visits. */
export function useFavourites(): [ReadonlySet<string>, (symbol: string) => void] {
  const [favourites, setFavourites] = useState(load);
  const toggle = useCallback((symbol: string) => {
    setFavourites((current) => {
      const next = new Set(current);
      if (!next.delete(symbol)) next.add(symbol);
      try {
        window.localStorage.setItem(STORAGE_KEY, JSON.stringify([...next].sort()));
      } catch {
        // Storage full or disabled: favourites last for this visit only.
      }
      return next;
    });
  }, []);
  return [favourites, toggle];
}
