/// <reference types="vitest/config" />
import { gzipSync } from "node:zlib";
import react from "@vitejs/plugin-react";
import { defineConfig, type Plugin } from "vite";

// The edge serves web/dist from the same origin as the API, so the app only uses
// relative URLs. `npm run dev` proxies them to a locally running edge
// (MARKETDATA_EDGE, default http://127.0.0.1:8080).
const edge = process.env.MARKETDATA_EDGE ?? "http://127.0.0.1:8080";

/** The JavaScript a first paint loads (the entry chunk and its static imports), gzipped. */
export const MAIN_BUNDLE_LIMIT_BYTES = 150_000;

/** Fails the build when the main bundle outgrows the limit; lazy chunks do not count. */
function mainBundleBudget(limit: number): Plugin {
  return {
    name: "main-bundle-budget",
    apply: "build",
    generateBundle(_options, bundle) {
      const chunks = new Map(
        Object.values(bundle).flatMap((item) => (item.type === "chunk" ? [[item.fileName, item] as const] : [])),
      );
      const loaded = new Set<string>();
      const visit = (fileName: string) => {
        if (loaded.has(fileName)) return;
        loaded.add(fileName);
        for (const imported of chunks.get(fileName)?.imports ?? []) visit(imported);
      };
      for (const chunk of chunks.values()) if (chunk.isEntry) visit(chunk.fileName);
      const bytes = [...loaded].reduce((sum, name) => sum + gzipSync(chunks.get(name)!.code, { level: 9 }).length, 0);
      const summary = `main bundle ${(bytes / 1000).toFixed(1)} kB gzipped (limit ${limit / 1000} kB): ${[...loaded].join(", ")}`;
      if (bytes > limit) this.error(summary);
      this.info(summary);
    },
  };
}

export default defineConfig({
  base: "./",
  plugins: [react(), mainBundleBudget(MAIN_BUNDLE_LIMIT_BYTES)],
  build: {
    target: "es2022",
    sourcemap: false,
    // The budget above is the real limit; this only silences Rollup's generic warning.
    chunkSizeWarningLimit: 500,
  },
  server: {
    proxy: {
      "/api": edge,
      "/realtime": edge,
    },
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
    // A zone with a half-hour offset, so tests catch UTC leaking into local labels.
    env: { TZ: "Asia/Kolkata" },
  },
});
