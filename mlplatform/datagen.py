"""Seeded synthetic data for the demo model: telecom customers and their monthly activity.

Each row is one customer's activity snapshot at ``event_time`` (entity ``customer_id``) with a
label ``churned`` that a small network can learn (AUC ≈ 0.85). Knobs:

* ``drift`` (0..1) shifts the feature distributions (more support calls, pricier plans, more
  month-to-month contracts) — the drift demo and tests use it;
* ``bad_fraction`` (0..1) corrupts that share of rows (missing ids, negative charges, unknown
  contract types, out-of-range tenure) — the validation demo and tests use it.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

CONTRACTS = ["month-to-month", "one-year", "two-year"]
REGIONS = ["north", "south", "east", "west"]


def generate(
    n_rows: int = 4000,
    seed: int = 0,
    end: datetime | None = None,
    days: int = 60,
    drift: float = 0.0,
    bad_fraction: float = 0.0,
) -> pd.DataFrame:
    """Return ``n_rows`` activity rows over the ``days`` before ``end`` (default: now, UTC)."""
    if not 0 <= drift <= 1 or not 0 <= bad_fraction <= 1:
        raise ValueError("drift and bad_fraction must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    n_customers = max(1, n_rows // 3)
    customer_id = rng.integers(1000, 1000 + n_customers, n_rows)
    offsets = rng.uniform(0, days * 86400, n_rows)
    event_time = pd.to_datetime([end - timedelta(seconds=int(s)) for s in offsets], utc=True)

    contract_p = np.array([0.45, 0.3, 0.25]) * (1 - drift) + np.array([0.8, 0.15, 0.05]) * drift
    contract = rng.choice(CONTRACTS, n_rows, p=contract_p / contract_p.sum())
    region = rng.choice(REGIONS, n_rows)
    tenure = np.clip(rng.gamma(2.0, 12.0, n_rows) * (1 - 0.5 * drift), 0, 120).round(0)
    charges = np.clip(rng.normal(70 + 25 * drift, 20, n_rows), 15, 200).round(2)
    calls = rng.poisson(1.5 + 3 * drift, n_rows).astype(float)
    usage = np.clip(rng.normal(300 - 80 * drift, 90, n_rows), 0, None).round(1)

    logit = (
        -1.4
        + 0.55 * calls
        - 0.05 * tenure
        + 0.025 * (charges - 70)
        - 0.004 * (usage - 300)
        + np.select([contract == "month-to-month", contract == "one-year"], [1.3, 0.2], -0.8)
        + np.where(region == "south", 0.3, 0.0)
    )
    churned = (rng.uniform(size=n_rows) < 1 / (1 + np.exp(-logit))).astype(int)

    df = pd.DataFrame(
        {
            "customer_id": customer_id.astype(float),
            "event_time": event_time,
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "usage_minutes": usage,
            "contract_type": contract,
            "region": region,
            "churned": churned,
        }
    )
    if bad_fraction:
        bad = rng.choice(n_rows, int(round(bad_fraction * n_rows)), replace=False)
        kinds = np.arange(len(bad)) % 4
        df.loc[bad[kinds == 0], "customer_id"] = np.nan
        df.loc[bad[kinds == 1], "monthly_charges"] = -abs(
            df.loc[bad[kinds == 1], "monthly_charges"]
        )
        df.loc[bad[kinds == 2], "contract_type"] = "lifetime"
        df.loc[bad[kinds == 3], "tenure_months"] = 999.0
    df["customer_id"] = df["customer_id"].astype("Int64")
    return df.sort_values("event_time", ignore_index=True)


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Write CSV or Parquet by suffix; timestamps as ISO-8601 UTC in CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S%z")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write seeded synthetic churn data (CSV/Parquet).")
    parser.add_argument("output", help="file to write (.csv or .parquet)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--drift", type=float, default=0.0, help="0..1 distribution shift")
    parser.add_argument(
        "--bad-fraction", type=float, default=0.0, help="0..1 share of corrupt rows"
    )
    args = parser.parse_args(argv)
    df = generate(
        args.rows, args.seed, days=args.days, drift=args.drift, bad_fraction=args.bad_fraction
    )
    print(write(df, args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
