"""Page load times of the platform view (issue 14, item 9) with many model versions.

Usage::

    .venv/bin/python benchmarks/bench_platform_view.py [--versions 50]
        [--out benchmarks/results/platform_view.md]

In a fresh platform home (a temporary ``MLP_HOME``) the demo model gets ``--versions`` MLflow
versions with lineage tags, published versions, gate summaries and a ``models.config``
(``tests/platform_fixtures.py``; stand-in SavedModel files: nothing is loaded). Each page and
JSON endpoint is requested through FastAPI's TestClient against the plugin's app (the same
handlers the API server mounts; authentication stubbed, the HTTP hop and Airflow's own
middleware not included): the first request (cold: MLflow's store opens) and p50/p99 of 20
after 2 warm-up calls. Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from benchmarks.timing import percentiles_ms, timed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/platform_view.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLP_HOME"] = str(Path(tmp) / "home")
        Path(os.environ["MLP_HOME"]).mkdir()
        import mlplatform_plugin
        import platform_pages
        from fastapi.testclient import TestClient

        from tests.platform_fixtures import build_history

        build_history(Path(os.environ["MLP_HOME"]), versions=args.versions)
        mlplatform_plugin.reports_app.dependency_overrides[mlplatform_plugin.airflow_user] = (
            lambda: "bench"
        )
        platform_pages.authorize_pipeline = lambda request, user, pipeline: None
        client = TestClient(mlplatform_plugin.reports_app)
        rows = []
        for url in (
            "/",
            "/models/demo",
            "/api/models/demo",
            f"/models/demo/versions/{args.versions}",
        ):
            response, cold = timed(lambda u=url: client.get(u))
            assert response.status_code == 200, (url, response.text[:200])
            p50, p99 = percentiles_ms(lambda u=url: client.get(u), calls=20, warmup=2)
            rows.append(f"| `/mlplatform{url}` | {len(response.content) / 1024:.0f} | {cold * 1000:.0f} | {p50:.0f} | {p99:.0f} |")  # fmt: skip
    load = os.getloadavg()[0]
    table = "\n".join(
        [
            f"Platform view with {args.versions} model versions ({datetime.now(UTC):%Y-%m-%d}, "
            f"{platform.machine()}, {os.cpu_count()} cores, load {load:.1f}; TestClient, no HTTP hop)",
            "",
            "| page | KiB | first ms | p50 ms | p99 ms |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(table)
    args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
