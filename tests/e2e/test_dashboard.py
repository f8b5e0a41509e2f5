"""The dashboard (web/dist, served by the edge) in headless Chromium against the running stack.

Needs:
- Debian's Chromium at /usr/bin/chromium (or $MARKETDATA_CHROMIUM); never a Playwright-downloaded browser;
- the built dashboard: `cd web && npm ci && npm run build`;
- the `edge_stack` fixture (ingest, aggregator, query and edge on free ports with real NATS and
  PostgreSQL), yielding an object with `.base_url`, `.api_key`, `.seed_symbol(symbol)`,
  `.stop_edge()` and `.start_edge()` (same port). Its methods may be plain or coroutines.

Run: `.venv/bin/python -m pytest -m browser tests/e2e`. A screenshot of every page as its test left
it (passed or failed) is saved to test-artifacts/dashboard-<test>.png (or $MARKETDATA_TEST_ARTIFACTS),
and the measured time to the first candle to test-artifacts/first-candle.json.

The page exposes `window.__md` (web/src/lib/test-hook.ts) so the test reads what the chart has
drawn instead of scraping a canvas.
"""

import asyncio
import inspect
import math
import os
import random
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

async_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("MARKETDATA_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("MARKETDATA_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The promise: a posted tick is on the chart within a second.
LIVE_DEADLINE_MS = 1_000
# Generous bounds for page loads and for EventSource's own reconnect delay.
LOAD_TIMEOUT_MS = 15_000
RECONNECT_TIMEOUT_MS = 30_000
# History posted before the page opens: a trade every 20 s over the last 45 minutes.
HISTORY_MINUTES = 45
HISTORY_STEP = timedelta(seconds=20)


async def call(method, *args):
    """Calls a fixture method that may be synchronous or a coroutine function."""
    result = method(*args)
    return await result if inspect.isawaitable(result) else result


def unique_symbol() -> str:
    return f"E{secrets.token_hex(3).upper()}USDT"


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Connection failures the tests cause on purpose (stopping the edge) are logged by Chromium itself, and so is
# a host interface coming or going (containers started beside the tests): the page handles both by retrying.
EXPECTED_NETWORK_ERRORS = ("net::ERR_CONNECTION_REFUSED", "net::ERR_EMPTY_RESPONSE", "net::ERR_INCOMPLETE_CHUNKED",
                           "net::ERR_NETWORK_CHANGED")


def record_console_error(errors: list[str], message) -> None:
    if message.type == "error" and not any(expected in message.text for expected in EXPECTED_NETWORK_ERRORS):
        errors.append(message.text)


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught errors and console errors of the pages under test."""
    return []


@pytest.fixture
async def open_page(request, page_errors: list[str]):
    """Opens pages in Debian's Chromium: open_page(width=, height=, locale=); each is screenshotted at the end."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if not (ROOT / "web" / "dist" / "index.html").exists():
        pytest.fail("web/dist is missing: run `npm ci && npm run build` in web/ first")
    pages = []
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

        async def open_one(width: int = 1280, height: int = 800, locale: str = "en-US"):
            context = await browser.new_context(viewport={"width": width, "height": height}, locale=locale)
            page = await context.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("console", lambda message: record_console_error(page_errors, message))
            pages.append(page)
            return page

        try:
            yield open_one
        finally:
            # The last state of each page, passed or failed.
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for index, page in enumerate(pages):
                suffix = f"-{index}" if index else ""
                await page.screenshot(path=str(ARTIFACTS / f"dashboard-{request.node.name}{suffix}.png"))
            await browser.close()


@pytest.fixture
async def page(open_page):
    return await open_page()


async def drawn(page, expression: str):
    return await page.evaluate(f"() => window.__md.{expression}")


async def wait_for_selection(page, symbol: str, interval: str) -> None:
    await page.wait_for_function(
        "([symbol, interval]) => window.__md && window.__md.symbol === symbol"
        " && window.__md.interval === interval && window.__md.barCount() > 0",
        arg=[symbol, interval],
        timeout=LOAD_TIMEOUT_MS,
    )


async def wait_for_status(page, status: str, timeout_ms: int) -> None:
    await page.wait_for_function(
        "status => document.querySelector('[data-testid=status]')?.textContent === status",
        arg=status,
        timeout=timeout_ms,
    )


async def post_ticks(client: httpx.AsyncClient, stack, items: list[dict]) -> None:
    response = await client.post(
        f"{stack.base_url}/api/v1/webhooks/ticks", headers={"x-api-key": stack.api_key}, json={"items": items}
    )
    response.raise_for_status()
    assert response.json()["accepted"] == len(items)


async def post_tick(client: httpx.AsyncClient, stack, symbol: str, price: float) -> datetime:
    now = datetime.now(UTC)
    tick = {"symbol": symbol, "price": price, "size": 0.5, "eventTime": rfc3339(now), "tradeId": secrets.token_hex(8)}
    await post_ticks(client, stack, [tick])
    return now


async def seed_history(client: httpx.AsyncClient, stack, symbol: str, start_price: float) -> None:
    """Posts a random walk of past trades and waits until the REST history has all of its minutes."""
    rng = random.Random(symbol)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=HISTORY_MINUTES)
    price, items = start_price, []
    for step in range(HISTORY_MINUTES * 3):
        price *= math.exp(rng.gauss(0, 0.002))
        items.append({
            "symbol": symbol,
            "price": round(price, 2),
            "size": round(rng.uniform(0.01, 2), 3),
            "eventTime": rfc3339(start + step * HISTORY_STEP),
            "tradeId": f"seed-{step}",
        })
    await post_ticks(client, stack, items)
    for _ in range(100):
        if len(await rest_candles(client, stack, symbol, "1m")) == HISTORY_MINUTES:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the history of {symbol} never showed its {HISTORY_MINUTES} minutes")


async def seeded_symbol(edge_stack, start_price: float) -> str:
    """A new symbol with HISTORY_MINUTES of trades around start_price."""
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        await seed_history(client, edge_stack, symbol, start_price)
    return symbol


async def wait_for_close(page, price: float, timeout_ms: int) -> None:
    await page.wait_for_function(
        "price => window.__md.lastBar()?.close === price", arg=price, timeout=timeout_ms
    )


async def rest_candles(client: httpx.AsyncClient, stack, symbol: str, interval: str,
                       time_zone: str = "UTC") -> list[dict]:
    response = await client.get(
        f"{stack.base_url}/api/v1/ticks/{symbol}/history",
        params={"view": "ohlc1m", "interval": interval, "limit": 300, "timeZone": time_zone},
    )
    response.raise_for_status()
    return response.json()["candles"]


async def test_dashboard_live(edge_stack, page, page_errors):
    first, second = unique_symbol(), unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        for symbol, start_price in ((first, 43_000), (second, 2_300)):
            await call(edge_stack.seed_symbol, symbol)
            await seed_history(client, edge_stack, symbol, start_price)

        # Candles of a seeded symbol, as the REST history has them.
        await page.goto(f"{edge_stack.base_url}/?symbol={first}&interval=1m")
        await wait_for_selection(page, first, "1m")
        await wait_for_status(page, "live", LOAD_TIMEOUT_MS)
        history = await rest_candles(client, edge_stack, first, "1m")
        await page.wait_for_function(
            "([count, close]) => window.__md.barCount() === count && window.__md.lastBar().close === close",
            arg=[len(history), history[-1]["close"]],
            timeout=LOAD_TIMEOUT_MS,
        )

        # A tick posted through the webhook updates the chart in place within a second.
        price = round((await drawn(page, "lastBar()"))["close"] * 1.001 + 0.37, 2)
        tick_time = await post_tick(client, edge_stack, first, price)
        await wait_for_close(page, price, LIVE_DEADLINE_MS)
        last = await drawn(page, "lastBar()")
        assert last["time"] == int(tick_time.timestamp()) // 60 * 60
        assert float((await page.text_content("[data-testid=last-price]")).replace(",", "")) == price

        # Switching the symbol redraws with the other symbol's candles.
        await page.click(f"[data-testid=watch-row][data-symbol={second}]")
        await wait_for_selection(page, second, "1m")
        expected = (await rest_candles(client, edge_stack, second, "1m"))[-1]
        assert (await drawn(page, "lastBar()"))["close"] == expected["close"]

        # Switching the interval redraws with 5-minute bars matching the REST history.
        await page.click("[data-testid=interval-5m]")
        await wait_for_selection(page, second, "5m")
        expected = (await rest_candles(client, edge_stack, second, "5m"))[-1]
        last = await drawn(page, "lastBar()")
        assert last["time"] % 300 == 0
        assert last["time"] == int(datetime.fromisoformat(expected["time"]).timestamp())
        assert [last[k] for k in ("open", "high", "low", "close")] == [
            expected[k] for k in ("open", "high", "low", "close")
        ]
        # A live tick folds into the open 5-minute bar: the same bar the server now reports.
        price = round(expected["close"] * 0.999 - 0.23, 2)
        await post_tick(client, edge_stack, second, price)
        await wait_for_close(page, price, LIVE_DEADLINE_MS)
        expected = (await rest_candles(client, edge_stack, second, "5m"))[-1]
        last = await drawn(page, "lastBar()")
        assert last["time"] == int(datetime.fromisoformat(expected["time"]).timestamp())
        assert [last[k] for k in ("open", "high", "low", "close")] == [
            expected[k] for k in ("open", "high", "low", "close")
        ]

        # A day candle aligned in the zone picked (Kolkata is UTC+05:30): the API's bar, then live ticks folded in.
        await page.click("[data-testid=interval-1d]")
        await page.select_option("[data-testid=zone-select]", "Asia/Kolkata")
        await page.wait_for_function(
            "() => window.__md.interval === '1d' && window.__md.zone === 'Asia/Kolkata' && window.__md.barCount() > 0",
            timeout=LOAD_TIMEOUT_MS)
        assert "tz=Asia%2FKolkata" in page.url or "tz=Asia/Kolkata" in page.url
        expected = (await rest_candles(client, edge_stack, second, "1d", "Asia/Kolkata"))[-1]
        last = await drawn(page, "lastBar()")
        assert last["time"] == int(datetime.fromisoformat(expected["time"]).timestamp())
        assert last["time"] % 3600 == 30 * 60  # local midnight is hh:30 in UTC
        price = round(expected["close"] * 1.003 + 0.19, 2)
        await post_tick(client, edge_stack, second, price)
        await wait_for_close(page, price, LIVE_DEADLINE_MS)
        expected = (await rest_candles(client, edge_stack, second, "1d", "Asia/Kolkata"))[-1]
        last = await drawn(page, "lastBar()")
        assert [last[k] for k in ("open", "high", "low", "close")] == [
            expected[k] for k in ("open", "high", "low", "close")
        ]

        # The status follows the stream: the edge goes away, then comes back.
        await call(edge_stack.stop_edge)
        await wait_for_status(page, "reconnecting", LOAD_TIMEOUT_MS)
        await page.locator("[data-testid=watchlist-status]").wait_for(timeout=LOAD_TIMEOUT_MS)
        await call(edge_stack.start_edge)
        await wait_for_status(page, "live", RECONNECT_TIMEOUT_MS)
        await page.locator("[data-testid=watchlist-status]").wait_for(state="detached", timeout=RECONNECT_TIMEOUT_MS)
        price = round(price * 1.002 + 0.11, 2)
        await post_tick(client, edge_stack, second, price)
        await wait_for_close(page, price, LIVE_DEADLINE_MS)

    assert page_errors == []


# ---------------------------------------------------------------- issue 17: a dashboard a trader keeps open

# The ticker stream sends the symbols that traded at most once a second, after the aggregator's commit.
WATCHLIST_DEADLINE_MS = 2_500
# Older pages are loaded 500 candles at a time (web/src/hooks/useCandleFeed.ts PAGE_LIMIT).
LONG_HISTORY_MINUTES = 1_150


async def seed_minutes(client: httpx.AsyncClient, stack, symbol: str, minutes: int, end: datetime,
                       start_price: float) -> list[dict]:
    """One trade a minute for `minutes` minutes ending before `end`; waits until the REST history has them all."""
    rng = random.Random(symbol)
    first = end.replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    price, items = start_price, []
    for step in range(minutes):
        price *= math.exp(rng.gauss(0, 0.002))
        items.append({"symbol": symbol, "price": round(price, 2), "size": round(rng.uniform(0.01, 2), 3),
                      "eventTime": rfc3339(first + timedelta(minutes=step, seconds=5)), "tradeId": f"m-{step}"})
    for offset in range(0, len(items), 1_000):
        await post_ticks(client, stack, items[offset:offset + 1_000])
    for _ in range(150):
        if await candle_count(client, stack, symbol) == minutes:
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"the history of {symbol} never showed its {minutes} minutes")


async def candle_count(client: httpx.AsyncClient, stack, symbol: str) -> int:
    """Every 1-minute candle of the symbol, walking the API's pages."""
    count, token = 0, ""
    while True:
        params = {"view": "ohlc1m", "interval": "1m", "limit": 5000, **({"pageToken": token} if token else {})}
        response = await client.get(f"{stack.base_url}/api/v1/ticks/{symbol}/history", params=params)
        response.raise_for_status()
        body = response.json()
        count += len(body.get("candles", []))
        token = body.get("nextPageToken", "")
        if not token:
            return count


async def drag_chart(page, dx: int) -> None:
    """Drags the price pane horizontally (positive dx: towards older candles)."""
    box = await page.locator(".chart-canvas").bounding_box()
    y = box["y"] + box["height"] * 0.4
    x = box["x"] + box["width"] * (0.2 if dx > 0 else 0.8)
    await page.mouse.move(x, y)
    await page.mouse.down()
    await page.mouse.move(x + dx, y, steps=8)
    await page.mouse.up()


async def test_scrolling_back_loads_older_candles_until_the_first(edge_stack, page, page_errors):
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        items = await seed_minutes(client, edge_stack, symbol, LONG_HISTORY_MINUTES, datetime.now(UTC), 43_000)

    page_tokens: list[str] = []

    async def slow_older_page(route):
        # Older pages answer late, so the test can see the view while one is in flight.
        page_tokens.append(route.request.url)
        await asyncio.sleep(0.6)
        await route.continue_()

    await page.route("**/history?*pageToken=*", slow_older_page)
    await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
    await wait_for_selection(page, symbol, "1m")
    first_candle_ms = await page.evaluate("() => performance.getEntriesByName('md-first-candle')[0]?.startTime")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "first-candle.json").write_text(f'{{"first_candle_ms": {first_candle_ms:.0f}}}\n')
    print(f"first candle drawn {first_candle_ms:.0f} ms after navigation")
    # The first page only: the view shows the newest bars, far from the oldest loaded one.
    assert await drawn(page, "barCount()") == 500
    assert not await drawn(page, "complete")
    assert await page.locator("[data-testid=go-realtime]").count() == 0

    # Drag back: when fewer than 50 bars remain left of the view, the next page is requested (once, however
    # much the user keeps dragging) and merged in front without moving what is on screen.
    first_seen = (await drawn(page, "firstBar()"))["time"]
    merges = 0
    for _ in range(40):
        if await drawn(page, "complete"):
            break
        count = await drawn(page, "barCount()")
        await drag_chart(page, 500)
        if await page.text_content("[data-testid=history-state]") != "Loading older candles…":
            continue
        await drag_chart(page, 100)  # still in flight: no second request
        before = await drawn(page, "visibleTimes()")
        await page.wait_for_function("count => window.__md.barCount() > count", arg=count, timeout=LOAD_TIMEOUT_MS)
        after = await drawn(page, "visibleTimes()")
        # Same newest bar on screen, same zoom; bars now fill what was empty space left of the oldest one.
        assert after["to"] == before["to"] and after["from"] <= before["from"], "merging an older page moved the view"
        assert after["bars"] == pytest.approx(before["bars"]), "merging an older page changed the zoom"
        merges += 1
    assert merges == 2
    assert await drawn(page, "complete"), "never reached the first candle"
    assert await drawn(page, "barCount()") == LONG_HISTORY_MINUTES
    first_minute = datetime.fromisoformat(items[0]["eventTime"]).replace(second=0, microsecond=0)
    assert (await drawn(page, "firstBar()"))["time"] == int(first_minute.timestamp()) < first_seen
    assert await drawn(page, "markers()") == ["First trade"]
    assert await page.text_content("[data-testid=history-state]") == "Start of history reached"
    # Two older pages, each requested once.
    assert len(page_tokens) == 2 and len(set(page_tokens)) == 2, page_tokens

    # Back to the newest candle in one click.
    await page.click("[data-testid=go-realtime]")
    await page.wait_for_function(
        "() => window.__md.visibleTimes().to >= window.__md.lastBar().time", timeout=LOAD_TIMEOUT_MS)
    await page.locator("[data-testid=go-realtime]").wait_for(state="detached", timeout=LOAD_TIMEOUT_MS)
    assert page_errors == []


async def test_watchlist_updates_live_and_search_filters(edge_stack, page, page_errors):
    first, second = unique_symbol(), unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        for symbol, start_price in ((first, 43_000), (second, 2_300)):
            await call(edge_stack.seed_symbol, symbol)
            await seed_history(client, edge_stack, symbol, start_price)

        streams: list[str] = []
        page.on("request", lambda request: "/realtime/ticker?" in request.url and streams.append(
            parse_qs(urlsplit(request.url).query)["symbol"][0]))
        await page.goto(f"{edge_stack.base_url}/?symbol={first}&interval=1m")
        await wait_for_selection(page, first, "1m")
        row = page.locator(f"[data-testid=watch-row][data-symbol={second}]")
        await row.wait_for(timeout=LOAD_TIMEOUT_MS)
        assert await page.get_attribute(f"[data-testid=watch-row][data-symbol={first}]", "aria-selected") == "true"
        # The 24h figures of the REST ticker.
        ticker = (await client.get(f"{edge_stack.base_url}/api/v1/ticker/24hr", params={"symbol": second})).json()
        expected = ticker["items"][0]
        await page.wait_for_function(
            "([symbol, text]) => document.querySelector(`[data-symbol=${symbol}] [data-testid=watch-last]`)"
            "?.textContent === text",
            arg=[second, f"{expected['last']:,.2f}"], timeout=LOAD_TIMEOUT_MS)

        # A trade of a symbol that is not on the chart shows in its row within a second.
        price = round(expected["last"] * 1.01 + 0.41, 2)
        await post_tick(client, edge_stack, second, price)
        await page.wait_for_function(
            "([symbol, text]) => document.querySelector(`[data-symbol=${symbol}] [data-testid=watch-last]`)"
            "?.textContent === text",
            arg=[second, f"{price:,.2f}"], timeout=WATCHLIST_DEADLINE_MS)
        change = (price - expected["open"]) / expected["open"] * 100
        assert await row.locator("[data-testid=watch-change]").text_content() == f"{change:+.2f}%"
        assert await row.locator("[data-testid=watch-fresh]").get_attribute("data-freshness") == "fresh"

        # One ticker stream for the whole watchlist (the chart has its own tick stream).
        assert len(streams) == 1 and {first, second} <= set(streams[0].split(",")), streams

        # Search by base narrows the list at once; keyboard picks the result.
        search = page.locator("[data-testid=watchlist-search]")
        await search.fill(second[:-4].lower())
        await page.wait_for_function("() => document.querySelectorAll('[data-testid=watch-row]').length === 1")
        assert await page.locator("[data-testid=watch-row]").get_attribute("data-symbol") == second
        await search.press("Enter")
        await wait_for_selection(page, second, "1m")
        await search.fill("usdt")
        assert await page.locator("[data-testid=watch-row]").count() >= 2
        listed = await page.eval_on_selector_all("[data-testid=watch-row]", "rows => rows.map(r => r.dataset.symbol)")
        await search.press("ArrowDown")
        await search.press("Enter")
        await wait_for_selection(page, listed[1], "1m")
        assert await page.get_attribute(f"[data-testid=watch-row][data-symbol={listed[1]}]", "aria-selected") == "true"
        await search.press("Escape")
        assert await search.input_value() == ""

        # A favourite is listed first and survives a reload.
        await page.click(f"[data-symbol={second}] [data-testid=watch-star]")
        await page.reload()
        await page.locator("[data-testid=watch-row]").first.wait_for(timeout=LOAD_TIMEOUT_MS)
        assert await page.locator("[data-testid=watch-row]").first.get_attribute("data-symbol") == second
        assert await page.locator("[data-testid=watch-row]").first.locator(
            "[data-testid=watch-star]").get_attribute("aria-pressed") == "true"
    assert page_errors == []


async def test_a_symbol_without_recent_trades_shows_stale(edge_stack, page, page_errors):
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        # The last trade 10 minutes ago: longer than three 1-minute intervals.
        await seed_minutes(client, edge_stack, symbol, 30, datetime.now(UTC) - timedelta(minutes=10), 100)

        await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
        await wait_for_selection(page, symbol, "1m")
        await wait_for_status(page, "stale", LOAD_TIMEOUT_MS)
        assert (await page.text_content("[data-testid=trade-age]")).endswith("min ago")
        fresh = page.locator(f"[data-testid=watch-row][data-symbol={symbol}] [data-testid=watch-fresh]")
        assert await fresh.get_attribute("data-freshness") == "recent"

        # At 1h, ten minutes without a trade is not stale.
        await page.click("[data-testid=interval-1h]")
        await wait_for_selection(page, symbol, "1h")
        await wait_for_status(page, "live", LOAD_TIMEOUT_MS)
        await page.click("[data-testid=interval-1m]")
        await wait_for_selection(page, symbol, "1m")
        await wait_for_status(page, "stale", LOAD_TIMEOUT_MS)

        # A trade makes it live again.
        await post_tick(client, edge_stack, symbol, 101.5)
        await wait_for_status(page, "live", LIVE_DEADLINE_MS * 3)
        # With the symbol's decimals (from its typical price, ~100), the price scale's too.
        text = await page.text_content("[data-testid=last-price]")
        assert float(text) == 101.5 and text == await drawn(page, "axisPrice(101.5)")
    assert page_errors == []


async def test_bad_links_show_a_notice_and_a_valid_selection(edge_stack, page, page_errors):
    await seeded_symbol(edge_stack, 500)  # a symbol to fall back to
    await page.goto(f"{edge_stack.base_url}/?symbol=NOPEUSD&interval=bogus&tz=Mars/Olympus")
    notice = page.locator("[data-testid=notice]")
    await notice.wait_for(timeout=LOAD_TIMEOUT_MS)
    await page.wait_for_function("() => document.querySelector('[data-testid=notice]').textContent.includes('NOPEUSD')",
                                 timeout=LOAD_TIMEOUT_MS)
    text = await notice.text_content()
    assert "bogus" in text and "Mars/Olympus" in text
    await page.wait_for_function("() => window.__md && window.__md.symbol !== null && window.__md.interval === '1m'",
                                 timeout=LOAD_TIMEOUT_MS)
    shown = await drawn(page, "symbol")
    listed = (await httpx.AsyncClient().get(f"{edge_stack.base_url}/api/v1/symbols?active=true")).json()["items"]
    assert shown in {item["symbol"] for item in listed}
    assert f"symbol={shown}" in page.url and "interval=1m" in page.url and "bogus" not in page.url
    assert page_errors == []


async def test_phone_width_without_overlap(edge_stack, open_page, page_errors):
    symbol = await seeded_symbol(edge_stack, 43_179)
    page = await open_page(width=360, height=740, locale="de-DE")
    await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
    await wait_for_selection(page, symbol, "1m")
    await page.wait_for_function("() => document.querySelector('[data-testid=last-price]').textContent !== '–'",
                                 timeout=LOAD_TIMEOUT_MS)

    # Nothing sticks out sideways, and the legend ends before the price scale.
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 360
    legend = await page.locator("[data-testid=legend]").bounding_box()
    canvas = await page.locator(".chart-canvas").bounding_box()
    scale_width = await drawn(page, "priceScaleWidth()")
    assert scale_width > 0
    assert legend["x"] + legend["width"] <= canvas["x"] + canvas["width"] - scale_width

    # The countdown to the 1-minute candle's close sits on the price scale.
    countdown = page.locator("[data-testid=countdown]")
    await countdown.wait_for(timeout=LOAD_TIMEOUT_MS)
    # At most a minute to go: 1:00 at the instant the minute starts, then 0:59 down to 0:00.
    assert re.fullmatch(r"0:[0-5][0-9]|1:00", await countdown.text_content())
    box = await countdown.bounding_box()
    assert box["x"] >= canvas["x"] + canvas["width"] - scale_width - 1

    # One locale: the header and the price scale format the same price the same way (de-DE).
    header = await page.text_content("[data-testid=last-price]")
    last = (await drawn(page, "lastBar()"))["close"]
    assert "," in header and await drawn(page, f"axisPrice({last})") == header

    # The watchlist is a drawer: closed, it covers nothing; opened, it lists and picks symbols.
    side = page.locator("#side-panel")
    assert (await side.bounding_box())["x"] + (await side.bounding_box())["width"] <= 0
    assert await page.evaluate("() => document.querySelector('#side-panel').inert")  # out of the tab order
    await page.click("[data-testid=symbol-button]")
    await page.wait_for_function("() => document.querySelector('#side-panel').getBoundingClientRect().left >= 0")
    assert await page.evaluate("() => document.activeElement.dataset.testid") == "watchlist-search"
    await page.click(f"[data-testid=watch-row][data-symbol={symbol}]")
    await page.wait_for_function("() => document.querySelector('#side-panel').getBoundingClientRect().right <= 0")
    assert page_errors == []


async def test_autoscale_can_ignore_a_bad_print(edge_stack, page, page_errors):
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        await seed_history(client, edge_stack, symbol, 43_000)
        await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
        await wait_for_selection(page, symbol, "1m")
        # A fat-finger print ten times the price: the autoscale has to show it...
        await post_tick(client, edge_stack, symbol, 430_000)
        await page.wait_for_function("() => window.__md.lastBar().high === 430000", timeout=LOAD_TIMEOUT_MS)
        await page.wait_for_function("() => window.__md.priceRange()?.to >= 430000", timeout=LOAD_TIMEOUT_MS)
        # ...until the user asks it to ignore outliers: the bulk of the prices fills the pane again.
        await page.check("[data-testid=ignore-outliers]")
        await page.wait_for_function("() => window.__md.priceRange()?.to < 50000", timeout=LOAD_TIMEOUT_MS)
        await page.uncheck("[data-testid=ignore-outliers]")
        await page.wait_for_function("() => window.__md.priceRange()?.to >= 430000", timeout=LOAD_TIMEOUT_MS)
        # A logarithmic scale keeps both in view: the axis labels stay prices.
        await page.click("[data-testid=scale-log]")
        assert await page.get_attribute("[data-testid=scale-log]", "aria-pressed") == "true"
        range_ = await drawn(page, "priceRange()")
        assert range_["from"] < 43_000 * 1.1 and range_["to"] >= 430_000
    assert page_errors == []


# ---------------------------------------------------------------- audit: zones, decimals, watchlist, keyboard, recovery

# lightweight-charts' TickMarkType: Year, Month, DayOfMonth, Time, TimeWithSeconds.
DATE_TICK_TYPES = (0, 1, 2)


async def test_date_labels_sit_at_local_midnight(edge_stack, page, page_errors):
    symbol = unique_symbol()
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        # A trade every 20 minutes over the last 3 days: an hourly bar at every local midnight.
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        await post_ticks(client, edge_stack, [
            {"symbol": symbol, "price": 100 + step % 7, "size": 1,
             "eventTime": rfc3339(end - timedelta(minutes=20 * step)), "tradeId": f"z-{step}"}
            for step in range(3 * 72)
        ])
    for zone, offsets in (("Asia/Kolkata", {(5, 30)}), ("America/New_York", {(-5, 0), (-4, 0)})):
        await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1h&tz={zone}")
        await page.wait_for_function(
            "([symbol, zone]) => window.__md && window.__md.symbol === symbol && window.__md.zone === zone"
            " && window.__md.barCount() >= 60 && window.__md.tickMarks().some(t => t.type <= 2)",
            arg=[symbol, zone], timeout=LOAD_TIMEOUT_MS)
        ticks = [tick for tick in await drawn(page, "tickMarks()") if tick["type"] in DATE_TICK_TYPES]
        # Every day label (and its gridline) is at the zone's midnight: the bar starting at 00:00 local time.
        local = [await page.evaluate(
            "([time, zone]) => new Intl.DateTimeFormat('en-US', {timeZone: zone, hour: '2-digit', minute: '2-digit',"
            " hourCycle: 'h23'}).format(new Date(time * 1000))", [tick["time"], zone]) for tick in ticks]
        assert ticks and set(local) == {"00:00"}, (zone, ticks, local)
    assert page_errors == []


async def test_one_precision_per_symbol_and_full_names_in_the_watchlist(edge_stack, open_page, page_errors):
    symbol, long_name = unique_symbol(), f"AUDIOLNG{secrets.token_hex(2).upper()}USDT"
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        await seed_history(client, edge_stack, symbol, 43_000)
        await call(edge_stack.seed_symbol, long_name)
        await post_tick(client, edge_stack, long_name, 67_816_817.2)
        page = await open_page(width=2560, height=900)
        await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
        await wait_for_selection(page, symbol, "1m")
        # A single print far below the usual price: shown with the symbol's decimals, like every other price.
        await post_tick(client, edge_stack, symbol, 1.0)
        await page.wait_for_function("() => document.querySelector('[data-testid=low]').textContent === '1.00'",
                                     timeout=LOAD_TIMEOUT_MS)
        texts = [await page.text_content(f"[data-testid={field}]") for field in ("last-price", "high", "low")]
        legend = await page.eval_on_selector_all("[data-testid=legend] dd", "items => items.map(i => i.textContent)")
        prices = texts + legend[:5] + [await drawn(page, "axisPrice(1)")]
        assert {len(text.rpartition(".")[2]) for text in prices} == {2}, prices
        # The symbol's watchlist row too.
        await page.wait_for_function(
            "symbol => document.querySelector(`[data-symbol=${symbol}] [data-testid=watch-last]`).textContent === '1.00'",
            arg=symbol, timeout=WATCHLIST_DEADLINE_MS)

    # The long symbol is readable in full next to its long price; the price gives way.
    row = page.locator(f"[data-testid=watch-row][data-symbol={long_name}]")
    await row.wait_for(timeout=LOAD_TIMEOUT_MS)
    await page.wait_for_function(
        "symbol => document.querySelector(`[data-symbol=${symbol}] [data-testid=watch-last]`).textContent !== '–'",
        arg=long_name, timeout=LOAD_TIMEOUT_MS)
    name = await row.locator(".watch-name").evaluate(
        "el => ({text: el.textContent, scroll: el.scrollWidth, client: el.clientWidth})")
    assert name["text"] == long_name and name["scroll"] <= name["client"], name
    last = await row.locator("[data-testid=watch-last]").evaluate(
        "el => ({text: el.textContent, scroll: el.scrollWidth, client: el.clientWidth, title: el.title})")
    assert last["scroll"] <= last["client"] and last["title"] == "67,816,817.20", last
    assert page_errors == []


async def test_a_symbols_decimals_do_not_depend_on_the_link(edge_stack, page, page_errors):
    """A symbol at 95 for weeks and at 101 today: its decimals come from its 24h figures (101: 3 decimals), at
    every interval. They came from the closes of the history loaded, which depend on the interval opened (the
    audit saw 3 at 1m and 4 at 1d); here mostly 95, so 4 decimals for a price of 101.01."""
    symbol = unique_symbol()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    async with httpx.AsyncClient(timeout=10) as client:
        await call(edge_stack.seed_symbol, symbol)
        await post_ticks(client, edge_stack, [
            {"symbol": symbol, "price": 95.0 + day / 100, "size": 1, "eventTime": rfc3339(now - timedelta(days=day)),
             "tradeId": f"d-{day}"} for day in range(2, 22)] + [
            {"symbol": symbol, "price": 101.0 + minute / 100, "size": 1,
             "eventTime": rfc3339(now - timedelta(minutes=minute)), "tradeId": f"m-{minute}"} for minute in range(1, 11)])
    shown = {}
    for interval in ("1d", "1m", "1w"):
        await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval={interval}")
        await wait_for_selection(page, symbol, interval)
        await page.wait_for_function("() => document.querySelector('[data-testid=last-price]').textContent !== '–'",
                                     timeout=LOAD_TIMEOUT_MS)
        shown[interval] = await page.text_content("[data-testid=last-price]")
    assert set(shown.values()) == {"101.010"}, shown
    assert page_errors == []


async def test_favourites_by_keyboard(edge_stack, page, page_errors):
    symbol = await seeded_symbol(edge_stack, 2_300)
    await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
    await wait_for_selection(page, symbol, "1m")
    search = page.locator("[data-testid=watchlist-search]")
    await search.fill(symbol)
    star = page.locator(f"[data-symbol={symbol}] [data-testid=watch-star]")
    assert await star.get_attribute("aria-pressed") == "false"
    # The documented key on the active row...
    await search.press("*")
    assert await search.input_value() == symbol
    await async_api.expect(star).to_have_attribute("aria-pressed", "true")
    assert await star.get_attribute("aria-label") == f"Favourite {symbol}"
    # ...and the star itself, one Tab away from the search.
    await search.press("Tab")
    assert await page.evaluate("() => document.activeElement.getAttribute('aria-label')") == f"Favourite {symbol}"
    await page.keyboard.press("Space")
    await async_api.expect(star).to_have_attribute("aria-pressed", "false")
    await page.keyboard.press("Enter")
    await async_api.expect(star).to_have_attribute("aria-pressed", "true")
    assert page_errors == []


async def test_symbol_error_clears_when_the_connection_is_back(edge_stack, page, page_errors):
    symbol = await seeded_symbol(edge_stack, 500)
    # Timers under the test's control (time still flows): the symbol list's backoff grows in no time.
    await page.clock.install()
    await page.goto(f"{edge_stack.base_url}/?symbol={symbol}&interval=1m")
    await wait_for_selection(page, symbol, "1m")
    await wait_for_status(page, "live", LOAD_TIMEOUT_MS)
    await call(edge_stack.stop_edge)
    try:
        await wait_for_status(page, "reconnecting", LOAD_TIMEOUT_MS)
        error = page.locator(".chart-message-error", has_text="Could not load symbols")
        # The minute's refresh fails, then retries 2, 4 and 8 s later: the next one is 16 s away.
        for step in ("01:01", "00:02", "00:04", "00:08"):
            await page.clock.fast_forward(step)
            await error.wait_for(timeout=LOAD_TIMEOUT_MS)
    finally:
        await call(edge_stack.start_edge)
    await wait_for_status(page, "live", RECONNECT_TIMEOUT_MS)
    # Back with the stream, not a backoff later.
    await error.wait_for(state="detached", timeout=5_000)
    assert page_errors == []
