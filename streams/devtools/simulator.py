"""A labelled card-transaction simulator with personas, fraud episodes and hard negatives.

No public card dataset with user ids can be shipped, so riskstream makes its own. The
simulator is vectorized (numpy arrays per population, no Python loop per transaction)
and deterministic for a seed. Its honesty rules, checked by tests:

* fraud uses the same device pool and merchant population as legitimate traffic, so no
  id or merchant is a label;
* amounts overlap (one-off large purchases, holiday bursts; card testing is tiny);
* legitimate users travel, change phones and shop at night, so "new country", "new
  device" and "odd hour" are evidence, not proof.

What separates most fraud is *behaviour relative to the user's own history*: exactly
what a sequence model should learn. Three scenarios are visible only across cards, at
the merchant or the device (what entity profiles are for):

* ``compromised_terminal``: a card-present terminal with its usual legitimate traffic is
  tampered with for one to four weeks; some cards paying there in that period are
  charged fraudulently at it (skimmed and cloned, or a corrupt employee);
* ``merchant_card_testing``: one small online merchant, within a few hours, many cards
  each tried for a tiny amount from one or two devices;
* ``device_farm``: one device pays for several cards over a day or three.

Their merchants and devices keep their legitimate traffic, so the id alone is no label;
confirmed fraud there in the past week is evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from features.contracts import CHANNELS
from features.labelled_files import CANONICAL_SCHEMA

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000

# (name, lat, lon, country, currency)
CITIES: tuple[tuple[str, float, float, str, str], ...] = (
    ("New York", 40.71, -74.01, "US", "USD"),
    ("Chicago", 41.88, -87.63, "US", "USD"),
    ("Los Angeles", 34.05, -118.24, "US", "USD"),
    ("Houston", 29.76, -95.37, "US", "USD"),
    ("Seattle", 47.61, -122.33, "US", "USD"),
    ("Miami", 25.76, -80.19, "US", "USD"),
    ("Denver", 39.74, -104.99, "US", "USD"),
    ("Boston", 42.36, -71.06, "US", "USD"),
    ("Toronto", 43.65, -79.38, "CA", "CAD"),
    ("Mexico City", 19.43, -99.13, "MX", "MXN"),
    ("London", 51.51, -0.13, "GB", "GBP"),
    ("Manchester", 53.48, -2.24, "GB", "GBP"),
    ("Paris", 48.86, 2.35, "FR", "EUR"),
    ("Berlin", 52.52, 13.40, "DE", "EUR"),
    ("Munich", 48.14, 11.58, "DE", "EUR"),
    ("Madrid", 40.42, -3.70, "ES", "EUR"),
    ("Rome", 41.90, 12.50, "IT", "EUR"),
    ("Amsterdam", 52.37, 4.90, "NL", "EUR"),
    ("Lisbon", 38.72, -9.14, "PT", "EUR"),
    ("Warsaw", 52.23, 21.01, "PL", "PLN"),
    ("Tokyo", 35.68, 139.69, "JP", "JPY"),
    ("Singapore", 1.35, 103.82, "SG", "SGD"),
    ("Sydney", -33.87, 151.21, "AU", "AUD"),
    ("Sao Paulo", -23.55, -46.63, "BR", "BRL"),
    ("Mumbai", 19.08, 72.88, "IN", "INR"),
    ("Dubai", 25.20, 55.27, "AE", "AED"),
    ("Lagos", 6.52, 3.38, "NG", "NGN"),
    ("Bangkok", 13.76, 100.50, "TH", "THB"),
)
#: Where users live: the bank's home markets get most of them.
HOME_CITY_WEIGHTS = np.array(
    [
        8,
        5,
        6,
        4,
        3,
        3,
        2,
        3,
        3,
        1,
        6,
        2,
        4,
        4,
        2,
        3,
        2,
        2,
        1,
        1,
        0.5,
        0.5,
        0.5,
        0.5,
        0.3,
        0.3,
        0.2,
        0.2,
    ]
)

# (mcc, weight in a typical mix, lognormal mu, sigma, online share)
CATEGORIES: tuple[tuple[int, float, float, float, float], ...] = (
    (5411, 18, np.log(45), 0.6, 0.05),  # grocery
    (5812, 10, np.log(32), 0.6, 0.02),  # restaurants
    (5814, 10, np.log(12), 0.5, 0.05),  # fast food
    (5541, 7, np.log(45), 0.4, 0.0),  # fuel
    (5912, 4, np.log(25), 0.7, 0.1),  # pharmacy
    (5311, 4, np.log(70), 0.8, 0.3),  # department stores
    (5651, 4, np.log(60), 0.7, 0.4),  # clothing
    (5732, 3, np.log(140), 1.0, 0.5),  # electronics
    (5942, 2, np.log(20), 0.6, 0.5),  # books
    (4121, 5, np.log(18), 0.5, 1.0),  # rides (app)
    (4111, 5, np.log(4), 0.5, 0.2),  # transit
    (4511, 0.6, np.log(320), 0.6, 0.9),  # airlines
    (7011, 0.8, np.log(170), 0.6, 0.6),  # hotels
    (5999, 5, np.log(35), 0.9, 0.4),  # misc retail
    (5815, 5, np.log(10), 0.8, 1.0),  # digital goods
    (4899, 2, np.log(15), 0.3, 1.0),  # subscriptions
    (6011, 3, np.log(90), 0.6, 0.0),  # ATM
    (5944, 0.4, np.log(280), 0.9, 0.3),  # jewelry
    (7995, 1, np.log(45), 1.0, 0.8),  # gambling
    (5977, 2, np.log(30), 0.6, 0.3),  # cosmetics
)
MCCS = np.array([c[0] for c in CATEGORIES])
CAT_WEIGHT = np.array([c[1] for c in CATEGORIES], dtype=float)
CAT_MU = np.array([c[2] for c in CATEGORIES])
CAT_SIGMA = np.array([c[3] for c in CATEGORIES])
CAT_ONLINE = np.array([c[4] for c in CATEGORIES])
ATM_CAT = int(np.flatnonzero(MCCS == 6011)[0])


def _cats(*mccs: int) -> np.ndarray:
    return np.array([int(np.flatnonzero(m == MCCS)[0]) for m in mccs])


SCENARIOS = (
    "account_takeover",
    "card_testing",
    "lost_stolen",
    "stolen_card_number",
    "impossible_travel",
    "compromised_merchant",
    "compromised_terminal",
    "merchant_card_testing",
    "device_farm",
)
#: Share of fraud *episodes* per scenario.
SCENARIO_MIX = np.array([0.16, 0.08, 0.16, 0.20, 0.12, 0.08, 0.08, 0.06, 0.06])


@dataclass(frozen=True)
class SimulatorConfig:
    """What to simulate; the same config and seed give byte-identical output."""

    users: int = 1000
    days: int = 30
    seed: int = 0
    fraud_rate: float = 0.003
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    tx_per_day: float = 2.0


@dataclass
class _Columns:
    """Column arrays of generated transactions (one population at a time)."""

    user: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    cat: np.ndarray
    channel: np.ndarray
    merchant: np.ndarray  # -1 = none
    city: np.ndarray  # city of the transaction (country/currency come from it)
    lat: np.ndarray
    lon: np.ndarray
    device: np.ndarray  # -1 = none
    label: np.ndarray
    scenario: np.ndarray  # -1 = legitimate, else index into SCENARIOS

    @staticmethod
    def concat(parts: list[_Columns]) -> _Columns:
        return _Columns(
            **{
                k: np.concatenate([getattr(p, k) for p in parts])
                for k in _Columns.__dataclass_fields__
            }
        )

    def take(self, idx: np.ndarray) -> _Columns:
        return _Columns(**{k: getattr(self, k)[idx] for k in _Columns.__dataclass_fields__})


class _World:
    """Cities, merchants, devices and user personas for one simulation."""

    def __init__(self, cfg: SimulatorConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        n_city, n_cat = len(CITIES), len(CATEGORIES)
        self.city_lat = np.array([c[1] for c in CITIES])
        self.city_lon = np.array([c[2] for c in CITIES])
        self.city_tz_h = np.round(self.city_lon / 15.0)
        u = cfg.users
        # ---- merchants: offline ones per (city, category), online ones per category
        per_bucket = max(2, int(u * 0.4 / (n_city * n_cat)) + 1)
        counts = rng.poisson(per_bucket, size=(n_city, n_cat)) + 1
        counts[:, CAT_ONLINE >= 1.0] = 0
        self.off_start = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]]).reshape(counts.shape)
        self.off_count = counts
        n_off = int(counts.sum())
        off_city = np.repeat(np.repeat(np.arange(n_city), n_cat), counts.ravel())
        off_cat = np.repeat(np.tile(np.arange(n_cat), n_city), counts.ravel())
        n_on_per_cat = np.maximum(3, (u * 0.02 * CAT_ONLINE).astype(int)) * (CAT_ONLINE > 0)
        self.on_start = n_off + np.concatenate([[0], np.cumsum(n_on_per_cat)[:-1]])
        self.on_count = n_on_per_cat
        on_cat = np.repeat(np.arange(n_cat), n_on_per_cat)
        on_city = rng.choice(
            n_city, size=on_cat.size, p=HOME_CITY_WEIGHTS / HOME_CITY_WEIGHTS.sum()
        )
        self.m_city = np.concatenate([off_city, on_city])
        self.m_cat = np.concatenate([off_cat, on_cat])
        jitter = 0.04
        self.m_lat = self.city_lat[self.m_city] + rng.normal(0, jitter, self.m_city.size)
        self.m_lon = self.city_lon[self.m_city] + rng.normal(0, jitter, self.m_city.size)
        # ---- devices: one shared pool for everybody (fraudsters draw from it too)
        self.n_devices = max(100, u * 3)
        # ---- personas
        p_city = HOME_CITY_WEIGHTS / HOME_CITY_WEIGHTS.sum()
        self.home = rng.choice(n_city, size=u, p=p_city)
        self.rate = cfg.tx_per_day * rng.lognormal(0.0, 0.5, u) / np.exp(0.125)
        self.wealth = rng.normal(0.0, 0.35, u)
        self.night_owl = rng.random(u) < 0.08
        self.peak_hour = np.where(self.night_owl, rng.normal(0.5, 1.0, u), rng.uniform(10, 20, u))
        self.hour_sd = rng.uniform(2.0, 4.0, u)
        self.weekend = rng.uniform(0.6, 1.6, u)
        self.payday = rng.random(u) < 0.4
        alpha = CAT_WEIGHT / CAT_WEIGHT.sum() * 12.0
        self.mix = rng.dirichlet(alpha, size=u)
        self.mix_cdf = np.cumsum(self.mix, axis=1)
        self.online_bias = rng.uniform(0.4, 1.6, u)
        self.contactless = rng.uniform(0.2, 0.9, u)
        self.loyalty = rng.uniform(0.5, 0.95, u)
        self.n_dev = rng.integers(1, 4, u)
        self.devices = rng.integers(0, self.n_devices, size=(u, 3))
        # new phone (hard negative): from this day on, device slot 0 is a new draw
        self.new_phone_day = np.where(rng.random(u) < 0.15, rng.uniform(0, cfg.days, u), np.inf)
        self.new_phone = rng.integers(0, self.n_devices, u)
        # legitimate travel (hard negative)
        travels = rng.random(u) < 0.12
        self.trip_start = np.where(travels, rng.uniform(0, cfg.days, u), np.inf)
        self.trip_len = rng.uniform(2, 10, u)
        domestic = rng.random(u) < 0.3
        other = rng.choice(n_city, size=u, p=p_city)
        same_country = np.array(
            [[CITIES[a][3] == CITIES[b][3] for b in range(n_city)] for a in range(n_city)]
        )
        self.trip_city = np.where(
            domestic & same_country[self.home].any(axis=1), other, rng.integers(0, n_city, u)
        )
        self.trip_city = np.where(
            self.trip_city == self.home, (self.home + 7) % n_city, self.trip_city
        )
        self.holidays = rng.choice(cfg.days, size=min(3, cfg.days), replace=False)

    # --------------------------------------------------------------- merchants
    def offline_merchant(
        self, city: np.ndarray, cat: np.ndarray, u: np.ndarray | None, loyal: np.ndarray
    ) -> np.ndarray:
        """A merchant in (city, category): the user's favourite if loyal, else any."""
        start = self.off_start[city, cat]
        count = np.maximum(self.off_count[city, cat], 1)  # online-only rows are discarded
        rnd = self.rng.integers(0, 1 << 30, city.size) % count
        if u is not None:
            fav = (u * 2654435761 + cat * 40503 + (self.rng.random(city.size) < 0.3)) % count
            rnd = np.where(loyal, fav, rnd)
        return start + rnd

    def online_merchant(
        self, cat: np.ndarray, u: np.ndarray | None, loyal: np.ndarray
    ) -> np.ndarray:
        """An online merchant of a category (favourites work online too)."""
        count = np.maximum(self.on_count[cat], 1)
        rnd = self.rng.integers(0, 1 << 30, cat.size) % count
        if u is not None:
            fav = (u * 2246822519 + cat * 3266489917) % count
            rnd = np.where(loyal, fav, rnd)
        return self.on_start[cat] + rnd


def _day_weights(world: _World) -> np.ndarray:
    cfg = world.cfg
    days = np.arange(cfg.days)
    dates = [cfg.start.timestamp() + d * 86400 for d in days]
    weekday = np.array([datetime.fromtimestamp(t, UTC).weekday() for t in dates])
    mday = np.array([datetime.fromtimestamp(t, UTC).day for t in dates])
    w = np.ones((cfg.users, cfg.days))
    w[:, weekday >= 5] *= world.weekend[:, None]
    pay = np.isin(mday, (1, 2, 15, 16))
    w[:, pay] *= np.where(world.payday, 1.6, 1.0)[:, None]
    w[:, world.holidays] *= 2.5
    return w


def _legit(world: _World) -> _Columns:
    cfg, rng = world.cfg, world.rng
    weights = _day_weights(world)
    n_per_user = rng.poisson(world.rate * weights.sum(axis=1))
    user = np.repeat(np.arange(cfg.users), n_per_user)
    n = user.size
    # day by inverse CDF over each user's day weights (one global searchsorted)
    flat = np.cumsum(weights.ravel())
    row_start = np.concatenate([[0.0], flat[cfg.days - 1 :: cfg.days][:-1]])
    row_total = weights.sum(axis=1)
    target = row_start[user] + rng.random(n) * row_total[user]
    day = np.minimum(np.searchsorted(flat, target, side="right") - user * cfg.days, cfg.days - 1)
    local_h = (world.peak_hour[user] + rng.normal(0, 1, n) * world.hour_sd[user]) % 24.0
    # category and channel
    cat = (world.mix_cdf[user] < rng.random(n)[:, None]).sum(axis=1).clip(0, len(MCCS) - 1)
    online = rng.random(n) < np.clip(CAT_ONLINE[cat] * world.online_bias[user], 0, 1)
    online |= CAT_ONLINE[cat] >= 1.0
    online &= cat != ATM_CAT
    # where: home, or the trip city during a trip
    day_f = day + local_h / 24.0
    on_trip = (day_f >= world.trip_start[user]) & (
        day_f < world.trip_start[user] + world.trip_len[user]
    )
    city = np.where(on_trip, world.trip_city[user], world.home[user])
    tz = world.city_tz_h[city]
    ts = (cfg.start.timestamp() * 1000 + day * DAY_MS + ((local_h - tz) * HOUR_MS)).astype(np.int64)
    ts += rng.integers(0, MINUTE_MS, n)
    loyal = (rng.random(n) < world.loyalty[user]) & ~on_trip
    merchant = np.where(
        online,
        world.online_merchant(cat, user, loyal),
        world.offline_merchant(city, cat, user, loyal),
    )
    amount = np.exp(rng.normal(CAT_MU[cat] + world.wealth[user], CAT_SIGMA[cat]))
    holiday = np.isin(day, world.holidays)
    amount = np.where(holiday, amount * 1.5, amount)
    # one-off large purchases (hard negative): ~0.3 % of legit transactions
    big = rng.random(n) < 0.003
    amount = np.where(big, amount * rng.uniform(5, 15, n), amount)
    amount = np.where(cat == ATM_CAT, np.maximum(20, np.round(amount / 20) * 20), amount)
    channel = np.where(
        online,
        CHANNELS.index("online"),
        np.where(
            cat == ATM_CAT,
            CHANNELS.index("atm"),
            np.where(
                rng.random(n) < world.contactless[user],
                CHANNELS.index("contactless"),
                CHANNELS.index("card_present"),
            ),
        ),
    )
    slot = rng.integers(0, 1 << 20, n) % world.n_dev[user]
    device = world.devices[user, slot]
    device = np.where(
        (slot == 0) & (day_f >= world.new_phone_day[user]), world.new_phone[user], device
    )
    device = np.where(online, device, -1)
    lat = np.where(online, np.nan, world.m_lat[merchant])
    lon = np.where(online, np.nan, world.m_lon[merchant])
    return _Columns(
        user,
        ts,
        amount,
        cat,
        channel,
        merchant,
        city,
        lat,
        lon,
        device,
        np.zeros(n, np.int8),
        np.full(n, -1, np.int8),
    )


def _episode_events(
    rng: np.random.Generator, sizes: np.ndarray, start: np.ndarray, gap_ms_mean: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Episode index per event and event times: ``start`` plus cumulative random gaps."""
    ep = np.repeat(np.arange(sizes.size), sizes)
    mean = np.broadcast_to(np.asarray(gap_ms_mean, dtype=float), sizes.shape)[ep]
    gaps = rng.exponential(1.0, ep.size) * mean
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gaps[first] = 0.0
    csum = np.cumsum(gaps)
    within = csum - np.repeat(csum[first], sizes)
    return ep, (start[ep] + within).astype(np.int64)


def _fraud(world: _World, legit: _Columns, n_target: int) -> _Columns:
    """Fraud episodes until ``n_target`` fraudulent transactions exist (every scenario once)."""
    rng, cfg = world.rng, world.cfg
    size_lo = np.array([3, 6, 3, 2, 1, 2, 4, 6, 4])
    size_hi = np.array([8, 16, 10, 6, 2, 5, 12, 20, 12])
    mean_size = (size_lo + size_hi - 1) / 2
    n_eps = max(len(SCENARIOS), int(n_target / float(SCENARIO_MIX @ mean_size) * 1.3) + 6)
    kinds = np.concatenate(
        [
            np.arange(len(SCENARIOS)),
            rng.choice(len(SCENARIOS), n_eps - len(SCENARIOS), p=SCENARIO_MIX),
        ]
    )
    sizes = rng.integers(size_lo[kinds], size_hi[kinds])
    keep = int(np.searchsorted(np.cumsum(sizes), n_target)) + 1
    keep = max(keep, len(SCENARIOS))
    kinds, sizes = kinds[:keep], sizes[:keep]
    t0 = cfg.start.timestamp() * 1000
    span = cfg.days * DAY_MS
    parts = []
    for k, name in enumerate(SCENARIOS):
        sel = kinds == k
        if sel.any():
            parts.append(_SCENARIO_BUILDERS[name](world, legit, sizes[sel], t0, span))
    out = _Columns.concat(parts)
    return out


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int, size: int) -> np.ndarray:
    """``n`` indices from ``pool``; from all ``size`` rows when a short or small simulation
    leaves the pool empty (fewer days than the history a scenario prefers)."""
    return rng.choice(pool if pool.size else np.arange(size), n)


def _pick_victims(world: _World, legit: _Columns, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Victims are active users; an episode starts after one of their own transactions."""
    rng = world.rng
    # draw legit transactions uniformly: victims weighted by activity, start after history
    t_min = legit.ts.min() + 3 * DAY_MS
    eligible = np.flatnonzero(legit.ts > t_min)
    pick = legit.take(_draw(rng, eligible, n, legit.ts.size))
    return pick.user, pick.ts + rng.integers(10 * MINUTE_MS, 12 * HOUR_MS, n)


def _build_online(
    world: _World,
    users: np.ndarray,
    ts: np.ndarray,
    cats: np.ndarray,
    amount: np.ndarray,
    device: np.ndarray,
    city: np.ndarray,
    kind: int,
) -> _Columns:
    n = ts.size
    merchant = world.online_merchant(cats, None, np.zeros(n, bool))
    return _Columns(
        users,
        ts,
        amount,
        cats,
        np.full(n, CHANNELS.index("online")),
        merchant,
        city,
        np.full(n, np.nan),
        np.full(n, np.nan),
        device,
        np.ones(n, np.int8),
        np.full(n, kind, np.int8),
    )


def _build_offline(
    world: _World,
    users: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
    cats: np.ndarray,
    channel: np.ndarray,
    merchant: np.ndarray,
    city: np.ndarray,
    kind: int,
) -> _Columns:
    """Fraudulent card-present events at real merchants (located, no device)."""
    n = ts.size
    return _Columns(
        users,
        ts,
        amount,
        cats,
        channel,
        merchant,
        city,
        world.m_lat[merchant],
        world.m_lon[merchant],
        np.full(n, -1),
        np.ones(n, np.int8),
        np.full(n, kind, np.int8),
    )


def _account_takeover(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    victim, start = _pick_victims(world, legit, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 15 * MINUTE_MS)
    cats = rng.choice(_cats(5732, 5311, 5944, 5999, 5815, 5651, 5411, 5812, 4121), ep.size)
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.9 + world.wealth[victim[ep]], CAT_SIGMA[cats]))
    new_device = rng.integers(0, world.n_devices, sizes.size)[ep]
    foreign = rng.random(sizes.size) < 0.3
    city = np.where(foreign, rng.integers(0, len(CITIES), sizes.size), world.home[victim])[ep]
    return _build_online(world, victim[ep], ts, cats, amount, new_device, city, 0)


def _card_testing(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    victim, start = _pick_victims(world, legit, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 2 * MINUTE_MS)
    last = np.cumsum(sizes) - 1
    cats = rng.choice(_cats(5815, 5999, 5942, 4899, 5814, 4121, 5411), ep.size)
    amount = rng.uniform(0.5, 3.0, ep.size)
    cats[last] = _cats(5732)[0]
    amount[last] = np.exp(rng.normal(np.log(450), 0.5, sizes.size))
    ts[last] += rng.integers(10 * MINUTE_MS, 6 * HOUR_MS, sizes.size)
    device = rng.integers(0, world.n_devices, sizes.size)[ep]
    city = rng.integers(0, len(CITIES), sizes.size)[ep]
    return _build_online(world, victim[ep], ts, cats, amount, device, city, 1)


def _lost_stolen(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    victim, start = _pick_victims(world, legit, sizes.size)
    spread = rng.uniform(1, 5, sizes.size) * DAY_MS / sizes
    ep, ts = _episode_events(rng, sizes, start, spread)
    cats = rng.choice(_cats(5411, 5541, 5732, 5999, 6011, 5912, 5812, 5814, 5311), ep.size)
    user = victim[ep]
    city = world.home[user]
    merchant = world.offline_merchant(city, cats, None, np.zeros(ep.size, bool))
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.6 + world.wealth[user], CAT_SIGMA[cats]))
    amount = np.where(cats == ATM_CAT, np.maximum(100, np.round(amount * 2 / 20) * 20), amount)
    channel = np.where(
        cats == ATM_CAT,
        CHANNELS.index("atm"),
        np.where(
            rng.random(ep.size) < 0.6, CHANNELS.index("contactless"), CHANNELS.index("card_present")
        ),
    )
    return _build_offline(world, user, ts, amount, cats, channel, merchant, city, 2)


def _stolen_card_number(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    victim, start = _pick_victims(world, legit, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 3 * HOUR_MS)
    cats = rng.choice(_cats(5732, 5999, 5815, 4511, 7011, 5651, 7995, 5411, 4121, 5812), ep.size)
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.5, CAT_SIGMA[cats]))
    device = rng.integers(0, world.n_devices, sizes.size)[ep]
    foreign = (world.home[victim] + rng.integers(1, len(CITIES), sizes.size)) % len(CITIES)
    return _build_online(world, victim[ep], ts, cats, amount, device, foreign[ep], 3)


def _impossible_travel(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    present = np.flatnonzero(
        (legit.channel != CHANNELS.index("online")) & (legit.ts > legit.ts.min() + 3 * DAY_MS)
    )
    anchor = legit.take(_draw(rng, present, sizes.size, legit.ts.size))
    start = anchor.ts + rng.integers(20 * MINUTE_MS, 120 * MINUTE_MS, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 40 * MINUTE_MS)
    far = (anchor.city + rng.integers(5, len(CITIES) - 5, sizes.size)) % len(CITIES)
    user, city = anchor.user[ep], far[ep]
    cats = rng.choice(_cats(5411, 5732, 5999, 6011, 5311, 5812), ep.size)
    merchant = world.offline_merchant(city, cats, None, np.zeros(ep.size, bool))
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.4 + world.wealth[user], CAT_SIGMA[cats]))
    channel = np.where(cats == ATM_CAT, CHANNELS.index("atm"), CHANNELS.index("card_present"))
    return _build_offline(world, user, ts, amount, cats, channel, merchant, city, 4)


def _compromised_merchant(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    offline = np.flatnonzero(
        (legit.channel != CHANNELS.index("online")) & (legit.ts < legit.ts.min() + span * 0.7)
    )
    # a handful of breached merchants; their customers' cards are misused 2-10 days later
    breached = np.unique(
        legit.merchant[_draw(rng, offline, max(1, sizes.size // 8), legit.ts.size)]
    )
    visits = offline[np.isin(legit.merchant[offline], breached)]
    anchor = legit.take(_draw(rng, visits, sizes.size, legit.ts.size))
    start = anchor.ts + rng.integers(2 * DAY_MS, 10 * DAY_MS, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 4 * HOUR_MS)
    cats = rng.choice(_cats(5732, 5999, 5311, 5815, 5411, 5812, 4121, 5651), ep.size)
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.6, CAT_SIGMA[cats]))
    device = rng.integers(0, world.n_devices, sizes.size)[ep]
    city = np.where(
        rng.random(sizes.size) < 0.5,
        world.home[anchor.user],
        rng.integers(0, len(CITIES), sizes.size),
    )[ep]
    return _build_online(world, anchor.user[ep], ts, cats, amount, device, city, 5)


def _compromised_terminal(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    offline = np.flatnonzero(legit.channel != CHANNELS.index("online"))
    # a busy terminal: drawn by its traffic (a transaction, then its merchant)
    terminal = legit.merchant[_draw(rng, offline, sizes.size, legit.ts.size)]
    begin = t0 + rng.uniform(0.05, 0.85, sizes.size) * span
    length = rng.uniform(7, 28, sizes.size) * DAY_MS
    ep = np.repeat(np.arange(sizes.size), sizes)
    ts = (begin[ep] + rng.uniform(0, 1, ep.size) * length[ep]).astype(np.int64)
    # the victims are cards of the terminal's city (its customers and their neighbours)
    city = world.m_city[terminal]
    in_city = [np.flatnonzero(world.home == c) for c in range(len(CITIES))]
    user = np.array(
        [
            rng.choice(in_city[c]) if in_city[c].size else rng.integers(0, world.cfg.users)
            for c in city[ep].tolist()
        ],
        dtype=np.int64,
    )
    cats = world.m_cat[terminal][ep]
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.5 + world.wealth[user], CAT_SIGMA[cats]))
    channel = np.where(
        rng.random(ep.size) < 0.5, CHANNELS.index("contactless"), CHANNELS.index("card_present")
    )
    return _build_offline(world, user, ts, amount, cats, channel, terminal[ep], city[ep], 6)


def _merchant_card_testing(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    victim, start = _pick_victims(world, legit, sizes.size)
    ep, ts = _episode_events(rng, sizes, start, 8 * MINUTE_MS)
    cat = rng.choice(_cats(5815, 5999, 4899, 5814), sizes.size)
    merchant = world.online_merchant(cat, None, np.zeros(sizes.size, bool))
    n = ep.size
    # one victim card per event: the run is across cards, not along one
    user = np.concatenate([[victim[0]], rng.integers(0, world.cfg.users, n - 1)])
    amount = rng.uniform(0.5, 2.5, n)
    devices = _used_devices(rng, legit, (sizes.size, 2))
    device = devices[ep, rng.integers(0, 2, n)]
    home = world.home[user]
    cols = _build_online(world, user, ts, cat[ep], amount, device, home, 7)
    cols.merchant = merchant[ep]
    return cols


def _device_farm(
    world: _World, legit: _Columns, sizes: np.ndarray, t0: float, span: float
) -> _Columns:
    rng = world.rng
    _, start = _pick_victims(world, legit, sizes.size)
    spread = rng.uniform(1, 3, sizes.size) * DAY_MS / sizes
    ep, ts = _episode_events(rng, sizes, start, spread)
    n = ep.size
    user = rng.integers(0, world.cfg.users, n)
    cats = rng.choice(_cats(5732, 5311, 5944, 5999, 5651, 4511, 7011), n)
    amount = np.exp(rng.normal(CAT_MU[cats] + 0.7, CAT_SIGMA[cats]))
    device = _used_devices(rng, legit, sizes.size)[ep]
    city = rng.integers(0, len(CITIES), sizes.size)[ep]
    return _build_online(world, user, ts, cats, amount, device, city, 8)


def _used_devices(
    rng: np.random.Generator, legit: _Columns, shape: int | tuple[int, ...]
) -> np.ndarray:
    """Devices that also pay legitimately (an emulated or shared fingerprint): the device
    id alone stays no label; what it does across cards is the evidence."""
    used = legit.device[legit.device >= 0]
    return rng.choice(used, shape) if used.size else rng.integers(0, 100, shape)


_SCENARIO_BUILDERS = {
    "account_takeover": _account_takeover,
    "card_testing": _card_testing,
    "lost_stolen": _lost_stolen,
    "stolen_card_number": _stolen_card_number,
    "impossible_travel": _impossible_travel,
    "compromised_merchant": _compromised_merchant,
    "compromised_terminal": _compromised_terminal,
    "merchant_card_testing": _merchant_card_testing,
    "device_farm": _device_farm,
}


def simulate(cfg: SimulatorConfig) -> pa.Table:
    """Generate a labelled, time-ordered table in the canonical labelled-file schema."""
    rng = np.random.default_rng(cfg.seed)
    world = _World(cfg, rng)
    legit = _legit(world)
    n_fraud = round(cfg.fraud_rate * legit.ts.size / (1.0 - cfg.fraud_rate))
    cols = _Columns.concat([legit, _fraud(world, legit, n_fraud)])
    begin = int(cfg.start.timestamp() * 1000)
    end = begin + cfg.days * DAY_MS
    inside = (cols.ts >= begin) & (cols.ts < end)
    cols = cols.take(np.flatnonzero(inside))
    order = np.lexsort((cols.user, cols.ts))
    cols = cols.take(order)
    return _to_table(cols, rng)


def _to_table(c: _Columns, rng: np.random.Generator) -> pa.Table:
    n = c.ts.size
    tx_ids = rng.integers(0, np.iinfo(np.int64).max, n, dtype=np.int64)
    country = np.array([city[3] for city in CITIES])[c.city]
    currency = np.array([city[4] for city in CITIES])[c.city]
    amount = np.round(np.maximum(c.amount, 0.01), 2)
    device = [None if d < 0 else f"d{d:07d}" for d in c.device.tolist()]
    merchant = [None if m < 0 else f"m{m:06d}" for m in c.merchant.tolist()]
    arrays = {
        "transaction_id": pa.array([f"tx{t:016x}" for t in tx_ids.tolist()], pa.string()),
        "user_id": pa.array([f"u{u:07d}" for u in c.user.tolist()], pa.string()),
        "timestamp": pa.array(c.ts, pa.int64()),
        "amount": pa.array(amount, pa.float64()),
        "currency": pa.array(currency.tolist(), pa.string()),
        "mcc": pa.array([f"{m:04d}" for m in MCCS[c.cat].tolist()], pa.string()),
        "channel": pa.array(np.array(CHANNELS)[c.channel].tolist(), pa.string()),
        "merchant_id": pa.array(merchant, pa.string()),
        "country": pa.array(country.tolist(), pa.string()),
        "lat": pa.array(np.round(c.lat, 5), pa.float64(), from_pandas=True),
        "lon": pa.array(np.round(c.lon, 5), pa.float64(), from_pandas=True),
        "device_id": pa.array(device, pa.string()),
        "is_fraud": pa.array(c.label, pa.int8()),
        "scenario": pa.array(
            [None if s < 0 else SCENARIOS[s] for s in c.scenario.tolist()], pa.string()
        ),
    }
    return pa.Table.from_pydict(arrays, schema=CANONICAL_SCHEMA)


def summarize(table: pa.Table) -> dict[str, object]:
    """Counts per scenario, fraud rate, transactions per user and the date range."""
    label = table.column("is_fraud").to_numpy()
    scen = table.column("scenario").to_pylist()
    users = table.column("user_id").to_pylist()
    ts = table.column("timestamp").to_numpy()
    per_scenario = {name: 0 for name in SCENARIOS}
    for s in scen:
        if s is not None:
            per_scenario[s] = per_scenario.get(s, 0) + 1
    n_users = len(set(users))
    return {
        "transactions": int(table.num_rows),
        "fraud": int(label.sum()),
        "fraud_rate": float(label.mean()) if label.size else 0.0,
        "users": n_users,
        "tx_per_user": table.num_rows / max(n_users, 1),
        "first": datetime.fromtimestamp(ts.min() / 1000, UTC).isoformat() if ts.size else None,
        "last": datetime.fromtimestamp(ts.max() / 1000, UTC).isoformat() if ts.size else None,
        "per_scenario": per_scenario,
    }


def single_field_aucs(table: pa.Table) -> dict[str, float]:
    """ROC-AUC of each raw field alone against the label (max of AUC and 1 - AUC).

    Numeric fields are used as they are (missing = lowest). Categorical fields are
    target-encoded on the earlier half of the period and scored on the later half, so
    an id that merely repeats inside a fraud episode does not count as a shortcut, but
    an id that *generalizes* (a fraud-only device or merchant) does.
    """
    from sklearn.metrics import roc_auc_score

    label = table.column("is_fraud").to_numpy().astype(int)
    ts = table.column("timestamp").to_numpy()
    later = ts >= np.median(ts)
    out: dict[str, float] = {}
    for name in ("amount", "lat", "lon", "timestamp"):
        values = table.column(name).to_numpy(zero_copy_only=False).astype(float)
        values = np.where(np.isnan(values), -1e12, values)
        auc = roc_auc_score(label, values)
        out[name] = float(max(auc, 1 - auc))
    for name in (
        "transaction_id",
        "user_id",
        "currency",
        "mcc",
        "channel",
        "merchant_id",
        "country",
        "device_id",
    ):
        values = np.array([str(v) for v in table.column(name).to_pylist()])
        keys, inv = np.unique(values, return_inverse=True)
        early = ~later
        pos = np.bincount(inv[early], weights=label[early], minlength=keys.size)
        cnt = np.bincount(inv[early], minlength=keys.size)
        prior = label[early].mean()
        rate = (pos + prior * 20) / (cnt + 20)  # smoothed target encoding
        y = label[later]
        if y.min() == y.max():
            continue
        auc = roc_auc_score(y, rate[inv[later]])
        out[name] = float(max(auc, 1 - auc))
    return out
