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
        "MLflow run",
        "MLflow model version",
    }
    assert p.fastapi_apps[0]["url_prefix"] == "/mlplatform"


def test_report_server_serves_data_docs_only(plugin, mlp_home):
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
