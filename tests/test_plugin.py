"""The Airflow plugin: extra links are registered and the report server serves only reports."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient

from tests.conftest import REPO


@pytest.fixture
def plugin(mlp_home, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    sys.modules.pop("mlplatform_plugin", None)
    import mlplatform_plugin

    return mlplatform_plugin


def test_links_and_report_app_are_registered(plugin):
    p = plugin.MlPlatformPlugin
    assert {link.name for link in p.operator_extra_links} == {
        "GX Data Docs",
        "Drift report",
        "MLflow run",
        "MLflow model version",
    }
    assert p.fastapi_apps[0]["url_prefix"] == "/mlplatform"


@pytest.fixture
def signed_in(plugin, monkeypatch):
    """The report app with Airflow's authentication and authorization stubbed out (they are
    tested through Airflow's real API app in tests/faults/test_access.py); records the
    pipelines that authorization was asked about."""
    asked: list[str] = []
    plugin.reports_app.dependency_overrides[plugin.airflow_user] = lambda: "user"
    monkeypatch.setattr(plugin, "authorize_pipeline", lambda request, user, p: asked.append(p))
    yield asked
    plugin.reports_app.dependency_overrides.clear()


def test_report_server_needs_an_airflow_user(plugin, mlp_home):
    assert (
        TestClient(plugin.reports_app).get("/reports/demo/r/validate/data_docs/").status_code == 401
    )


def test_report_server_serves_data_docs_only(plugin, mlp_home, signed_in):
    from mlplatform.settings import get_settings
    from operators.links import DataDocsLink

    docs = mlp_home / "storage" / "demo" / "run1" / "validate" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>suite demo_raw</html>")
    (docs.parent.parent / "ingest").mkdir()
    (docs.parent.parent / "ingest" / "raw.parquet").write_bytes(b"data")
    url = DataDocsLink.url(get_settings(), docs / "index.html")
    assert url == "/mlplatform/reports/demo/run1/validate/data_docs/index.html"
    client = TestClient(plugin.reports_app)
    ok = client.get(url.removeprefix("/mlplatform"))
    assert ok.status_code == 200 and "suite demo_raw" in ok.text
    assert client.get("/reports/demo/run1/validate/data_docs/").status_code == 200
    assert client.get("/reports/demo/run1/ingest/raw.parquet").status_code == 404
    assert (
        client.get("/reports/demo/run1/validate/data_docs/../../ingest/raw.parquet").status_code
        == 404
    )
    assert client.get("/reports/demo/run1/validate/data_docs/missing.html").status_code == 404
    assert set(signed_in) == {"demo"}  # authorized against the resolved path's pipeline


def test_report_server_serves_the_drift_report(plugin, mlp_home, signed_in):
    """The monitor's Evidently report opens through its "Drift report" link; the check's other
    files beside it (drift.json, summary.json) are not reports."""
    from mlplatform.settings import get_settings
    from operators.links import DriftReportLink

    stage = mlp_home / "storage" / "demo" / "monitor__scheduled_1" / "drift"
    (stage / "reports").mkdir(parents=True)
    (stage / "reports" / "drift.html").write_text("<html>Data Drift</html>")
    (stage / "drift.json").write_text("{}")
    url = DriftReportLink.url(get_settings(), stage / "reports" / "drift.html")
    assert url == "/mlplatform/reports/demo/monitor__scheduled_1/drift/reports/drift.html"
    client = TestClient(plugin.reports_app)
    ok = client.get(url.removeprefix("/mlplatform"))
    assert ok.status_code == 200 and "Data Drift" in ok.text
    assert client.get("/reports/demo/monitor__scheduled_1/drift/drift.json").status_code == 404
    assert set(signed_in) == {"demo"}
