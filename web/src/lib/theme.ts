import type { DeepPartial, ChartOptions } from "lightweight-charts";
import type { DirectionColors } from "./candles";

// Direction colours read well on both backgrounds, so a theme switch only
// restyles the chart's frame and never has to recolour the data.
export type ColorScheme = "light" | "dark";

export const CANDLE_COLORS: DirectionColors = { up: "#16a394", down: "#e5484d" };
export const VOLUME_COLORS: DirectionColors = { up: "rgba(22, 163, 148, 0.45)", down: "rgba(229, 72, 77, 0.45)" };
export const SMA_COLOR = "#f0a020";

const FRAME: Record<ColorScheme, { background: string; text: string; grid: string; border: string }> = {
  dark: { background: "#0f141b", text: "#aab4c3", grid: "rgba(170, 180, 195, 0.07)", border: "#253040" },
  light: { background: "#ffffff", text: "#3b4656", grid: "rgba(59, 70, 86, 0.07)", border: "#d9dee6" },
};

export function chartTheme(scheme: ColorScheme): DeepPartial<ChartOptions> {
  const frame = FRAME[scheme];
  return {
    layout: {
      background: { color: frame.background },
      textColor: frame.text,
      panes: { separatorColor: frame.border, separatorHoverColor: frame.grid },
    },
    grid: { vertLines: { color: frame.grid }, horzLines: { color: frame.grid } },
    rightPriceScale: { borderColor: frame.border },
    timeScale: { borderColor: frame.border },
  };
}
