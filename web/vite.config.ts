/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The edge serves web/dist from the same origin as the API, so the app only uses
// relative URLs. `npm run dev` proxies them to a locally running edge
// (MARKETDATA_EDGE, default http://127.0.0.1:8080).
const edge = process.env.MARKETDATA_EDGE ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    target: "es2022",
    sourcemap: false,
    // React and lightweight-charts are most of the ~400 kB (about 125 kB gzipped).
    chunkSizeWarningLimit: 450,
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
