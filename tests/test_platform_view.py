"""The platform view (issue 14): pages and JSON of models, versions, gate, drift, lineage and
audit behind Airflow's login; the rollback and retrain actions; the rollback DAG's optional
params. Authentication is stubbed here (the real one is exercised in ``test_platform_access``)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.conftest import REPO
from tests.platform_fixtures import build_history, run_id


@dataclass
class User:
    name: str

    def get_name(self) -> str:
        return self.name


@pytest.fixture
def plugin(mlp_home, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    for name in ("mlplatform_plugin", "platform_pages", "platform_auth"):
        sys.modules.pop(name, None)
    import mlplatform_plugin

    return mlplatform_plugin


@pytest.fixture
def signed_in(plugin, monkeypatch):
    """Signed in as ``ada``; records authorization questions and triggered runs."""
    import platform_pages

    asked: dict[str, list] = {"read": [], "trigger": [], "runs": []}
    plugin.reports_app.dependency_overrides[plugin.airflow_user] = lambda: User("ada")
    monkeypatch.setattr(
        platform_pages, "authorize_pipeline", lambda r, u, p: asked["read"].append(p)
    )
    monkeypatch.setattr(plugin, "authorize_pipeline", lambda r, u, p: asked["read"].append(p))
    monkeypatch.setattr(
        platform_pages, "authorize_trigger", lambda r, u, d: asked["trigger"].append(d)
    )

    def trigger(dag_id, conf, user):
        asked["runs"].append((dag_id, conf, user))
        return f"manual__run{len(asked['runs'])}"

    monkeypatch.setattr(platform_pages, "trigger", trigger)
    yield asked
    plugin.reports_app.dependency_overrides.clear()


@pytest.fixture
def history(mlp_home):
    return build_history(mlp_home, versions=3)


def test_the_view_is_in_airflows_navigation(plugin):
    (view,) = plugin.MlPlatformPlugin.external_views
    assert view["href"] == "/mlplatform/" and view["destination"] == "nav" and view["url_route"]


def test_every_page_needs_an_airflow_user(plugin, mlp_home):
    client = TestClient(plugin.reports_app)
    for url in ("/", "/api/models", "/models/demo", "/api/models/demo/versions/1"):
        assert client.get(url).status_code == 401, url
    assert client.post("/models/demo/rollback", data={"to_version": ""}).status_code == 401
    assert client.post("/models/demo/retrain").status_code == 401


def test_model_json_lists_versions_aliases_served_gate_drift_and_audit(
    plugin, signed_in, history, mlp_home
):
    from mlplatform import audit
    from mlplatform.monitoring.state import Window, write_state
    from mlplatform.settings import get_settings

    settings = get_settings()
    report = mlp_home / "storage" / "demo" / "monitor__m1" / "drift" / "reports" / "drift.html"
    result = {"model_name": "demo", "checked_at": "2026-11-20T00:00:00+00:00", "drift_share": 0.5,
              "drifted_features": ["tenure_months"], "triggered": True, "reason": "drift 0.50 > 0.30",
              "report": report.as_uri()}  # fmt: skip
    from datetime import UTC, datetime

    write_state(settings, "demo", "monitor__m1", Window(None, datetime.now(UTC)), result)
    audit.record(settings, "demo", "promote", actor="user ada", reason="passed the gate", model="demo", version=3)  # fmt: skip

    got = TestClient(plugin.reports_app).get("/api/models/demo").json()
    assert got["served_version"] == 3 and got["labels"] == {"stable": 3}
    assert got["aliases"] == {"champion": 3, "challenger": 3}
    assert got["rollback_default"] == 2 and got["published"] == [1, 2, 3]
    versions = {v["version"]: v for v in got["versions"]}
    assert [v["version"] for v in got["versions"]] == [3, 2, 1]
    assert versions[3]["served"] and not versions[1]["served"]
    assert versions[3]["aliases"] == ["challenger", "champion"] and versions[3]["labels"] == [
        "stable"
    ]
    assert versions[3]["gate"]["challenger"] == 0.803 and versions[3]["gate"]["champion"] == 0.802
    assert versions[3]["gate"]["slices"] == {"region=north": 0.81, "region=south": 0.79}
    assert versions[2]["gate"] == {"decision": "refused", "refused": "gate refused demo v2: auc=0.7000 is past the floor 0.75"}  # fmt: skip
    assert got["last_drift"]["drift_share"] == 0.5
    assert (
        got["last_drift"]["report_url"]
        == "/mlplatform/reports/demo/monitor__m1/drift/reports/drift.html"
    )
    assert [(e["action"], e["actor"], e["version"]) for e in got["audit"]] == [
        ("promote", "user ada", 3)
    ]
    assert got["dags"]["rollback"] == "mlp_demo_rollback" and "monitor" in got["dags"]
    assert signed_in["read"] == ["demo"]


def test_pages_render_server_side_without_external_assets(plugin, signed_in, history):
    client = TestClient(plugin.reports_app)
    for url in ("/", "/models/demo", "/models/demo/versions/3"):
        page = client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), url
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page.text), url
    model = client.get("/models/demo").text
    assert 'id="v3" class="served"' in model and "gate refused demo v2" in model
    assert '<option value="2" selected>v2 (previous)</option>' in model
    assert '<option value="3"' not in model  # the served version is not a rollback target
    assert "mlp_demo_rollback" in model and "Trigger retrain" in model


def test_an_unknown_model_or_version_is_a_json_404(plugin, signed_in, history):
    client = TestClient(plugin.reports_app)
    got = client.get("/models/%3Cscript%3E")
    assert got.status_code == 404 and got.headers["content-type"] == "application/json"
    assert got.json()["detail"].startswith("no pipeline serves a model named")
    assert client.get("/api/models/demo/versions/99").status_code == 404


def test_lineage_links_every_step_and_the_data_docs_open(plugin, signed_in, history):
    client = TestClient(plugin.reports_app)
    got = client.get("/api/models/demo/versions/3").json()
    steps = {s["step"]: s for s in got["steps"]}
    assert list(steps) == ["data version", "validation (Data Docs)", "features", "Airflow run",
                           "MLflow run", "model version", "served version"]  # fmt: skip
    assert all(s["href"] for s in got["steps"]), got["steps"]
    run = run_id(3).replace(":", "%3A").replace("+", "%2B")
    assert steps["Airflow run"]["href"] == f"/dags/mlp_demo_train/runs/{run}"
    assert steps["data version"]["href"] == f"/dags/mlp_demo_train/runs/{run}/tasks/ingest"
    assert steps["MLflow run"]["href"].endswith(f"/runs/{history['mlflow_runs'][3]}")
    assert steps["model version"]["href"].endswith("/#/models/demo/versions/3")
    assert steps["served version"]["value"] == "v3 (stable)"
    docs = client.get(steps["validation (Data Docs)"]["href"].removeprefix("/mlplatform"))
    assert docs.status_code == 200 and "data docs of v3" in docs.text
    assert got["gate"]["decision"] == "promote"


def test_rollback_form_triggers_the_rollback_dag_as_the_user(plugin, signed_in, history):
    client = TestClient(plugin.reports_app)
    previous = client.post("/models/demo/rollback", data={"to_version": "", "reason": "bad canary"}, follow_redirects=False)  # fmt: skip
    assert (
        previous.status_code == 303
        and "the%20previous%20version%20%28v2%29" in previous.headers["location"]
    )
    picked = client.post("/models/demo/rollback", data={"to_version": "1"}, follow_redirects=False)
    assert picked.status_code == 303
    assert signed_in["runs"] == [
        ("mlp_demo_rollback", {"to_version": None, "reason": "bad canary"}, "ada"),
        ("mlp_demo_rollback", {"to_version": 1, "reason": None}, "ada"),
    ]
    assert signed_in["trigger"] == ["mlp_demo_rollback"] * 2


@pytest.mark.parametrize("version", ["3", "99", "two"])
def test_a_bad_rollback_target_is_one_line_and_triggers_nothing(
    plugin, signed_in, history, version
):
    client = TestClient(plugin.reports_app)
    got = client.post("/models/demo/rollback", data={"to_version": version}, follow_redirects=False)
    assert got.status_code == 303 and got.headers["location"].endswith("&error=true")
    page = client.get(got.headers["location"].removeprefix("/mlplatform"))
    assert 'class="msg err"' in page.text
    assert signed_in["runs"] == []


def test_retrain_button_and_cross_site_forms(plugin, signed_in, history):
    client = TestClient(plugin.reports_app)
    ok = client.post(
        "/models/demo/retrain", data={"data_uri": " /data/b.csv "}, follow_redirects=False
    )
    assert ok.status_code == 303
    assert signed_in["runs"] == [("mlp_demo_train", {"data_uri": "/data/b.csv"}, "ada")]
    evil = client.post("/models/demo/retrain", headers={"origin": "https://evil.example"})
    assert evil.status_code == 403 and len(signed_in["runs"]) == 1


def test_rollback_dag_params_are_optional(mlp_home):
    from airflow.sdk.definitions.param import ParamsDict

    from mlplatform.config import load_pipeline
    from mlplatform.dag_factory import build_rollback_dag

    dag = build_rollback_dag(load_pipeline(REPO / "pipelines" / "demo.yaml"))
    params = ParamsDict(dag.params)
    assert params.validate() == {"to_version": None, "reason": None}  # the form may stay empty
    params["to_version"] = 2
    assert params.validate()["to_version"] == 2
    with pytest.raises(ValueError):
        bad = ParamsDict(dag.params)
        bad["to_version"] = 0
        bad.validate()


def test_data_docs_are_served_with_local_assets(plugin, signed_in, mlp_home):
    """A real GX Data Docs page (GX's own renderer) refers to CDNs; served, every one of them is a
    local copy that the app serves itself."""
    from importlib.util import find_spec
    from pathlib import Path

    from gx_assets import ASSETS

    from mlplatform.settings import get_settings
    from operators.links import DataDocsLink

    gx_root = Path(find_spec("great_expectations").submodule_search_locations[0])  # no import
    template = gx_root / "render" / "view" / "templates"
    html = "".join(p.read_text() for p in sorted(template.glob("*.j2")))
    cdn = set(
        re.findall(r'(?:src|href)="(https://(?:cdn|code|maxcdn|stackpath|unpkg)[^"]+)"', html)
    )
    assert cdn and cdn <= set(ASSETS), cdn - set(ASSETS)  # GX's list is the vendored one
    docs = mlp_home / "storage" / "demo" / "r1" / "validate" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text(
        "".join(f'<script src="{url}"></script>' for url in sorted(cdn))
    )
    client = TestClient(plugin.reports_app)
    page = client.get(
        DataDocsLink.url(get_settings(), docs / "index.html").removeprefix("/mlplatform")
    )
    assert page.status_code == 200 and "https://" not in page.text
    local = re.findall(r'src="/mlplatform(/static/gx/[^"]+)"', page.text)
    assert len(local) == len(cdn)
    for url in local:
        assert client.get(url).status_code == 200, url
    assert client.get("/static/gx/webfonts/fa-solid-900.woff2").status_code == 200


def test_mlflow_tags_link_back_into_the_ui_over_http(mlp_home):
    from mlplatform.config import load_pipeline
    from mlplatform.platform_view import ui_links
    from mlplatform.settings import get_settings

    docs = mlp_home / "storage" / "demo" / "run_1" / "validate" / "data_docs" / "index.html"
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    tags = {"data_docs": docs.as_uri()}
    links = ui_links(
        get_settings(), cfg, 4, "manual__2026-11-28T10:00:00+00:00", tags, "http://ui:8080/"
    )
    assert links == {
        "airflow_run_url": "http://ui:8080/dags/mlp_demo_train/runs/manual__2026-11-28T10%3A00%3A00%2B00%3A00",
        "platform_url": "http://ui:8080/mlplatform/models/demo/versions/4",
        "data_docs_url": "http://ui:8080/mlplatform/reports/demo/run_1/validate/data_docs/index.html",
    }
    outside = ui_links(
        get_settings(), cfg, 4, "r", {"data_docs": "file:///etc/passwd"}, "http://ui"
    )
    assert "data_docs_url" not in outside  # only files the report server would serve
