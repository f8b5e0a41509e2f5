"""The dashboard (web/dist, served by the edge) in headless Chromium against the running stack.

Needs:
- Debian's Chromium at /usr/bin/chromium (or $MARKETDATA_CHROMIUM); never a Playwright-downloaded browser;
- the built dashboard: `cd web && npm ci && npm run build`;
- the `edge_stack` fixture (ingest, aggregator, query and edge on free ports with real NATS and
  PostgreSQL), yielding an object with `.base_url`, `.api_key`, `.seed_symbol(symbol)`,
  `.stop_edge()` and `.start_edge()` (same port). Its methods may be plain or coroutines.

Run: `.venv/bin/python -m pytest -m browser tests/e2e`. A screenshot of the page as the test left
it (passed or failed) is saved to test-artifacts/dashboard.png (or $MARKETDATA_TEST_ARTIFACTS).

The page exposes `window.__md` (web/src/lib/test-hook.ts) so the test reads what the chart has
drawn instead of scraping a canvas.
"""

import asyncio
import inspect
import math
import os
import random
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught errors of the page under test."""
    return []


@pytest.fixture
async def page(page_errors: list[str]):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    if not (ROOT / "web" / "dist" / "index.html").exists():
        pytest.fail("web/dist is missing: run `npm ci && npm run build` in web/ first")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        page = await context.new_page()
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            yield page
        finally:
            # The last state of the page, passed or failed.
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
            await browser.close()


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


async def wait_for_close(page, price: float, timeout_ms: int) -> None:
    await page.wait_for_function(
        "price => window.__md.lastBar()?.close === price", arg=price, timeout=timeout_ms
    )


async def rest_candles(client: httpx.AsyncClient, stack, symbol: str, interval: str) -> list[dict]:
    response = await client.get(
        f"{stack.base_url}/api/v1/ticks/{symbol}/history",
        params={"view": "ohlc1m", "interval": interval, "limit": 300},
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
        await page.select_option("[data-testid=symbol-select]", second)
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

        # The status follows the stream: the edge goes away, then comes back.
        await call(edge_stack.stop_edge)
        await wait_for_status(page, "reconnecting", LOAD_TIMEOUT_MS)
        await call(edge_stack.start_edge)
        await wait_for_status(page, "live", RECONNECT_TIMEOUT_MS)
        price = round(price * 1.002 + 0.11, 2)
        await post_tick(client, edge_stack, second, price)
        await wait_for_close(page, price, LIVE_DEADLINE_MS)

    assert page_errors == []
