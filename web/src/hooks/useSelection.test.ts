import { describe, expect, it } from "vitest";
import { BROWSER_ZONE } from "../lib/zones";
import { parseLocation } from "./useSelection";

describe("links", () => {
  it("takes a good link as it is", () => {
    expect(parseLocation("?symbol=btcusdt&interval=4h&tz=Europe/Berlin")).toEqual({
      selection: { symbol: "BTCUSDT", interval: "4h", zone: "Europe/Berlin" },
      notices: [],
    });
    expect(parseLocation("?interval=1M&tz=%2B08:00").selection).toMatchObject({ interval: "1M", zone: "+08:00" });
    // Typed by hand, the "+" is not encoded and arrives as a space.
    expect(parseLocation("?tz=+08:00")).toMatchObject({ selection: { zone: "+08:00" }, notices: [] });
  });

  it("answers a bad interval or zone with a notice and a valid choice", () => {
    const { selection, notices } = parseLocation("?symbol=NOPEUSD&interval=bogus&tz=Mars/Olympus");
    expect(selection).toEqual({ symbol: "NOPEUSD", interval: "1m", zone: BROWSER_ZONE });
    expect(notices).toHaveLength(2);
    expect(notices[0]).toMatch(/bogus.*1m/);
    expect(notices[1]).toMatch(/Mars\/Olympus/);
  });

  it("offers the API's named intervals only", () => {
    expect(parseLocation("?interval=7m").notices).toHaveLength(1); // not an interval at all
    expect(parseLocation("?interval=10m").notices).toHaveLength(1); // valid for the API, not offered
    expect(parseLocation("").notices).toEqual([]);
  });
});
