"""Small tables a new user might bring to `mlplatform init` (not the demo's schema)."""

from __future__ import annotations

import numpy as np
import pandas as pd

DISTRICTS = ["north", "south", "east", "west"]


def rents(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A regression table: string entity ids (``L-00042``), text event times, a categorical with
    gaps (``district``, ~10 % missing), column names with a space (``floor area``,
    ``building age``) and the label last (``monthly_rent``, a linear function plus noise)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-10-01", tz="UTC")
    seconds = np.sort(rng.uniform(0, 50 * 24 * 3600, n))
    area = rng.uniform(30, 200, n)
    rooms = rng.integers(1, 6, n)
    district = rng.choice([*DISTRICTS, None], n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    effect = pd.Series(district).map({"north": 40, "south": 10, "east": 25, "west": 0})
    age = rng.uniform(0, 80, n)
    noise = rng.normal(0, 25, n)
    rent = 200 + 6 * area + 30 * rooms + effect.fillna(15).to_numpy() - 0.8 * age + noise
    times = start + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "listing_id": [f"L-{i % 700:05d}" for i in range(n)],
            "listed_at": times.strftime("%Y-%m-%dT%H:%M:%S"),
            "floor area": area.round(1),
            "rooms": rooms,
            "district": district,
            "building age": age.round(0),
            "monthly_rent": rent.round(2),
        }
    )


def churn(n: int = 400, seed: int = 1) -> pd.DataFrame:
    """A classification table: integer ids, a 0/1 label named ``churned``, a free-text column
    that is no category, and a second timestamp column."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-09-01", tz="UTC")
    times = start + pd.to_timedelta(np.arange(n) * 3600, unit="s")
    usage = rng.uniform(0, 100, n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) % 150,
            "event_time": times.strftime("%Y-%m-%d %H:%M:%S"),
            "signup_date": (times - pd.Timedelta(days=90)).strftime("%Y-%m-%d"),
            "usage": usage.round(2),
            "plan": rng.choice(["basic", "pro"], n),
            "comment": [f"note {i}" for i in range(n)],
            "churned": (usage + rng.normal(0, 20, n) < 40).astype(int),
        }
    )
