"""Synthetic trades that look like a real market: the domain logic of the feeder, free of I/O.

Each symbol follows a geometric Brownian motion with its own price level and volatility; trades arrive as a
Poisson process (exponential gaps) with occasional bursts (one aggressive order sweeping several levels:
quick trades on one side), sizes are heavy-tailed (lognormal body times a Pareto tail), prices are rounded
to the symbol's tick size (buys round up, sells down: a one-tick bid/ask bounce) and sizes to its lot size.

The generator runs on its own clock (seconds since the start of the run): `until(t)` returns the trades up to
t. With the same seed and parameters it produces the same sequence; trade ids embed the run epoch, so a
restarted feeder never reuses an id of an earlier run.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SECONDS_PER_YEAR = 365.0 * 24 * 3600
BUY = 1
SELL = 2


@dataclass(frozen=True)
class SymbolSpec:
    """How one instrument trades."""

    symbol: str
    base: str
    quote: str
    price: float  # starting price
    volatility: float  # annualised volatility of log returns (0.6 = 60 %)
    tick_size: float  # prices are multiples of this
    lot_size: float  # sizes are multiples of this (and at least one lot)
    typical_size: float  # median-ish trade size, in base units
    weight: float = 1.0  # share of the trade flow (relative)
    drift: float = 0.0  # annualised drift of the GBM


# Price levels, volatilities, ticks and lots in the spirit of the big spot exchanges.
DEFAULT_SPECS: dict[str, SymbolSpec] = {s.symbol: s for s in (
    SymbolSpec("BTCUSDT", "BTC", "USDT", 43_000.0, 0.55, 0.01, 0.00001, 0.02, weight=5.0),
    SymbolSpec("ETHUSDT", "ETH", "USDT", 2_300.0, 0.65, 0.01, 0.0001, 0.4, weight=3.0),
    SymbolSpec("SOLUSDT", "SOL", "USDT", 100.0, 0.90, 0.01, 0.001, 8.0, weight=2.0),
    SymbolSpec("BNBUSDT", "BNB", "USDT", 310.0, 0.60, 0.01, 0.001, 2.0, weight=1.0),
    SymbolSpec("XRPUSDT", "XRP", "USDT", 0.62, 0.80, 0.0001, 1.0, 900.0, weight=1.0),
    SymbolSpec("ADAUSDT", "ADA", "USDT", 0.55, 0.85, 0.0001, 0.1, 1_000.0, weight=0.7),
    SymbolSpec("DOGEUSDT", "DOGE", "USDT", 0.085, 1.00, 0.00001, 1.0, 5_000.0, weight=0.7),
    SymbolSpec("AVAXUSDT", "AVAX", "USDT", 35.0, 0.95, 0.01, 0.01, 12.0, weight=0.6),
)}
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
QUOTES = ("USDT", "USDC", "BUSD", "EUR", "USD", "BTC", "ETH")


def split_symbol(symbol: str) -> tuple[str, str]:
    """("BTCUSDT" -> "BTC", "USDT"); unknown quotes give (symbol, "")."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, ""


def spec_for(symbol: str) -> SymbolSpec:
    """The known spec of a symbol, or a plausible one derived from its name (same name, same spec)."""
    symbol = symbol.upper()
    if symbol in DEFAULT_SPECS:
        return DEFAULT_SPECS[symbol]
    digest = int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")
    price = 10 ** (-1 + (digest % 5000) / 1000)  # 0.1 .. 10 000, log-uniform
    decimals = max(0, 4 - math.floor(math.log10(price)))  # ~5 significant digits
    tick = 10.0 ** -decimals
    typical_notional = 500.0
    size_decimals = max(0, min(8, 2 + math.floor(math.log10(price))))
    lot = 10.0 ** -size_decimals
    base, quote = split_symbol(symbol)
    base = re.sub(r"[^A-Z0-9]", "", base)[:12] or "X"  # assets are 1 to 12 of A-Z, 0-9
    return SymbolSpec(symbol, base, quote or "USD", round(price, decimals), 0.5 + (digest >> 20) % 60 / 100,
                      tick, lot, max(lot, typical_notional / price))


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def round_to_step(value: float, step: float, mode: str = "nearest") -> float:
    """value rounded to a multiple of step ("nearest", "up" or "down"), without binary noise (0.1+0.2)."""
    ratio = value / step
    units = math.ceil(ratio - 1e-9) if mode == "up" else math.floor(ratio + 1e-9) if mode == "down" else round(ratio)
    return round(units * step, _decimals(step))


@dataclass(frozen=True)
class Trade:
    symbol: str
    seq: int  # per-symbol sequence number, from 1, strictly increasing
    trade_id: str
    time: float  # seconds since the start of the run (the generator's clock)
    price: float
    size: float
    side: int  # BUY or SELL (values of marketdata.v1.Side)


@dataclass
class _SymbolState:
    spec: SymbolSpec
    log_mid: float
    last_time: float
    seq: int = 0


class TradeGenerator:
    """A reproducible stream of trades across several symbols at a given average rate (trades/second)."""

    def __init__(self, specs: Sequence[SymbolSpec] | Iterable[str] = DEFAULT_SYMBOLS, *, rate: float = 50.0,
                 seed: int | None = None, run_epoch: int = 0, burst_probability: float = 0.03,
                 burst_mean_length: float = 6.0, burst_speedup: float = 20.0, size_tail_alpha: float = 1.6,
                 size_sigma: float = 0.8) -> None:
        specs = [s if isinstance(s, SymbolSpec) else spec_for(s) for s in specs]
        if not specs:
            raise ValueError("at least one symbol is needed")
        if len({s.symbol for s in specs}) != len(specs):
            raise ValueError("symbols must be distinct")
        if not rate > 0:
            raise ValueError("rate must be > 0")
        if not 0 <= burst_probability < 1:
            raise ValueError("burst_probability must be in [0, 1)")
        self.specs = specs
        self.rate = rate
        self.seed = seed
        self.run_epoch = run_epoch
        self.burst_probability = burst_probability
        self.burst_mean_length = max(1.0, burst_mean_length)
        self.burst_speedup = max(1.0, burst_speedup)
        self.size_tail_alpha = size_tail_alpha
        self.size_sigma = size_sigma
        self._random = random.Random(seed)
        self._states = {s.symbol: _SymbolState(s, math.log(s.price), 0.0) for s in specs}
        self._weights = [s.weight for s in specs]
        # A trade starts a burst with probability p; a burst adds on average L-1 more trades, each arriving
        # k times faster. The base intensity is chosen so the long-run average rate stays `rate`.
        p, length, k = burst_probability, self.burst_mean_length, self.burst_speedup
        extra = p * (length - 1)  # burst trades per normal trade
        self._base_rate = rate * (1 + extra / k) / (1 + extra)
        self._clock = 0.0
        self._burst: tuple[str, int, int] | None = None  # (symbol, side, trades left)
        self._pending: Trade | None = None

    @property
    def clock(self) -> float:
        """Time of the last trade handed out (or skipped to)."""
        return self._clock

    def _evolve(self, state: _SymbolState, to_time: float) -> None:
        dt = to_time - state.last_time
        if dt > 0:
            sigma = state.spec.volatility / math.sqrt(SECONDS_PER_YEAR)
            mu = state.spec.drift / SECONDS_PER_YEAR
            state.log_mid += (mu - 0.5 * sigma * sigma) * dt + sigma * math.sqrt(dt) * self._random.gauss(0.0, 1.0)
            state.last_time = to_time

    def _size(self, spec: SymbolSpec) -> float:
        r = self._random
        # Lognormal body (median 1 after the Pareto's median is divided out) times a Pareto tail.
        raw = r.lognormvariate(0.0, self.size_sigma) * r.paretovariate(self.size_tail_alpha)
        raw /= 2 ** (1 / self.size_tail_alpha)
        return max(spec.lot_size, round_to_step(spec.typical_size * raw, spec.lot_size))

    def _next(self) -> Trade:
        r = self._random
        if self._burst is not None:
            symbol, side, left = self._burst
            gap = r.expovariate(self._base_rate * self.burst_speedup)
            self._burst = (symbol, side, left - 1) if left > 1 else None
        else:
            gap = r.expovariate(self._base_rate)
            symbol = r.choices(self.specs, weights=self._weights)[0].symbol
            side = BUY if r.random() < 0.5 else SELL
            if r.random() < self.burst_probability:
                # Geometric number of follow-up trades with mean L-1.
                follow = 0
                q = 1 / self.burst_mean_length
                while r.random() > q:
                    follow += 1
                if follow:
                    self._burst = (symbol, side, follow)
        time = self._clock + gap
        state = self._states[symbol]
        self._evolve(state, time)
        spec = state.spec
        mid = math.exp(state.log_mid)
        price = round_to_step(mid, spec.tick_size, "up" if side == BUY else "down")
        if price <= 0:
            price = spec.tick_size
        state.seq += 1
        return Trade(symbol=symbol, seq=state.seq, trade_id=self.trade_id(symbol, state.seq), time=time,
                     price=price, size=self._size(spec), side=side)

    def trade_id(self, symbol: str, seq: int) -> str:
        # Fixed-width fields: ids of one symbol sort like their sequence, across runs too.
        return f"{symbol}-{self.run_epoch:013d}-{seq:010d}"

    def until(self, time: float) -> list[Trade]:
        """Every trade with a time <= `time`, in time order."""
        trades: list[Trade] = []
        while True:
            if self._pending is None:
                self._pending = self._next()
            if self._pending.time > time:
                return trades
            trades.append(self._pending)
            self._clock = self._pending.time
            self._pending = None

    def take(self, count: int) -> list[Trade]:
        """The next `count` trades, whatever their times."""
        trades = []
        for _ in range(count):
            trade = self._pending or self._next()
            self._pending = None
            self._clock = trade.time
            trades.append(trade)
        return trades

    def skip_to(self, time: float) -> None:
        """Moves the clock to `time` without trades (after an outage): prices diffuse over the gap."""
        if time <= self._clock:
            return
        if self._pending is not None:
            # The pending trade was never handed out: its sequence number is given to the next one.
            self._states[self._pending.symbol].seq -= 1
            self._pending = None
        self._burst = None
        self._clock = time
        for state in self._states.values():
            self._evolve(state, time)
