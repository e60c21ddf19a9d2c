"""docker-compose.yml, rendered offline with ``docker-compose config`` (no engine needed), agrees
with the platform's Settings: the MLP_* variables of the Airflow services are read into
:class:`~mlplatform.settings.Settings` and every host, port, bucket, database and path it yields
is checked against the service that provides it. Start order and health checks are checked too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mlplatform.settings import Settings
from serving.layout import MODELS_CONFIG
from tests.conftest import REPO
from tests.deploy_render import (
    COMPOSE_SECRETS,
    render_compose,
    run_compose_config,
    unknown_airflow_options,
)

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
ONE_SHOTS = {"minio-init", "airflow-init"}
FEAST_PRODUCTION_YAML = REPO / "feature_repo" / "feature_store.production.yaml"


def _feast_yaml_vars() -> set[str]:
    """The ${VARS} that Feast expands in the production yaml (comments aside)."""
    lines = FEAST_PRODUCTION_YAML.read_text().splitlines()
    text = "\n".join(line.split("#", 1)[0] for line in lines)
    return set(re.findall(r"\$\{(\w+)\}", text))


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict[str, Any]:
    return render_compose(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture
def settings(services, monkeypatch) -> Settings:
    """Settings as the Airflow containers read them (their environment, nothing else)."""
    for key in list(os.environ):
        if key.startswith("MLP_"):
            monkeypatch.delenv(key)
    for key, value in services["airflow-scheduler"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return Settings(_env_file=None)


def _flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in a command: a list of words, or a shell
    (``sh -ec 'line'``) whose line is split as the shell would."""
    shell = command[0].rsplit("/", 1)[-1] in ("sh", "bash")
    words = shlex.split(command[-1]) if shell else command
    for i, word in enumerate(words):
        if word == name:
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{name} not in {command}")


def _bucket(uri: str) -> str:
    parts = urlsplit(uri)
    assert parts.scheme == "s3", uri
    return parts.netloc


def _volume_target(service: dict, source: str) -> str:
    """Where ``source`` (a named volume or host path) is mounted; docker-compose v1 renders
    volumes as ``source:target:mode`` strings."""
    for volume in service.get("volumes", []):
        src, target = volume.split(":")[:2]
        if src == source:
            return target
    raise AssertionError(f"volume {source} not mounted: {service.get('volumes')}")


def _init_databases() -> set[str]:
    script = (REPO / "docker" / "postgres" / "init-databases.sh").read_text()
    match = re.search(r"^for db in ([a-z_ ]+); do", script, re.M)
    assert match, "no database list in init-databases.sh"
    return set(match.group(1).split())


def test_missing_secret_fails_naming_it(tmp_path):
    partial = {k: v for k, v in COMPOSE_SECRETS.items() if k != "AIRFLOW_JWT_SECRET"}
    out = run_compose_config(tmp_path, partial)
    assert out.returncode != 0
    assert "set AIRFLOW_JWT_SECRET" in out.stderr


def test_every_secret_of_the_env_file_is_used(compose):
    rendered = yaml.safe_dump(compose)
    unused = [k for k, v in COMPOSE_SECRETS.items() if v not in rendered]
    assert not unused, f"env-file variables nothing reads: {unused}"


def test_stack_has_every_service(services):
    expected = {"postgres", "redis", "minio", "minio-init", "mlflow", "tf-serving"}
    assert expected | set(AIRFLOW_SERVICES) <= set(services)
    assert services["tf-serving"]["image"].startswith("tensorflow/serving:")
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"]["dockerfile"] == "docker/airflow.Dockerfile"


def test_health_checks_and_start_order(services):
    for name, service in services.items():
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            want = "service_completed_successfully" if dep in ONE_SHOTS else "service_healthy"
            assert cond["condition"] == want, f"{name} -> {dep}: {cond}"
    # the stores and the buckets come before anything of Airflow's but its migration
    for name in AIRFLOW_SERVICES[1:]:
        deps = services[name]["depends_on"]
        assert {"postgres", "redis", "minio-init", "mlflow", "airflow-init"} <= set(deps), name
    assert set(services["mlflow"]["depends_on"]) == {"postgres", "minio-init"}
    assert "airflow-init" in services["tf-serving"]["depends_on"]  # it writes models.config


def test_airflow_services_share_one_environment(services):
    first = services[AIRFLOW_SERVICES[0]]["environment"]
    for name in AIRFLOW_SERVICES[1:]:
        assert services[name]["environment"] == first, name
        assert services[name]["volumes"] == services[AIRFLOW_SERVICES[0]]["volumes"], name


def test_every_platform_variable_is_a_setting(services):
    """A misspelt MLP_* name would be ignored silently (Settings has extra='ignore')."""
    env = services["airflow-scheduler"]["environment"]
    fields = {f"MLP_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in env if k.startswith("MLP_")} - fields - _feast_yaml_vars()
    assert not unknown, f"MLP_ variables that no setting reads: {sorted(unknown)}"


def test_every_airflow_variable_is_an_airflow_option(services):
    """AIRFLOW__SECTION__OPTION names that Airflow does not know would be ignored silently."""
    env = services["airflow-scheduler"]["environment"]
    pairs = [tuple(key.lower().split("__")[1:3]) for key in env if key.startswith("AIRFLOW__")]
    assert len(pairs) > 10
    assert not unknown_airflow_options(pairs)
    assert unknown_airflow_options([("core", "executer")]) == ["core.executer"]


def test_metadata_database_is_postgres(services):
    env = services["airflow-scheduler"]["environment"]
    conn = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    pg = services["postgres"]["environment"]
    assert conn.scheme == "postgresql+psycopg"  # the driver uv.lock installs (psycopg 3)
    assert (conn.hostname, conn.port) == ("postgres", 5432)
    assert (conn.username, conn.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert conn.path.lstrip("/") in _init_databases()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver"
    assert str(api.port) == _flag(services["airflow-apiserver"]["command"], "--port")


def test_database_urls_load_their_driver(services):
    """Each SQLAlchemy URL names a dialect and driver that the locked environment has (the
    image installs the same lock): Airflow's metadata, MLflow's backend, Feast's registry."""
    from sqlalchemy import create_engine

    env = services["airflow-scheduler"]["environment"]
    urls = [
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        env["MLP_FEAST_REGISTRY_URL"],
        services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
    ]
    for url in urls:
        engine = create_engine(url)  # no connection is made
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
        engine.dispose()


def test_dags_folder_is_the_installed_checkout(services):
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    workdirs = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == f"{workdirs[-1]}/dags"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == f"{workdirs[-1]}/plugins"


def test_minio_init_grants_the_app_its_buckets_only(services, tmp_path):
    """minio-init's script, run by sh with a stand-in ``mc`` that records its calls: versioned
    buckets, and a policy for the application's user on exactly those buckets."""
    init = services["minio-init"]
    assert init["entrypoint"][:2] == ["/bin/sh", "-ec"]
    # compose hands $$ to the container as $; the policy file goes to tmp_path instead of /tmp
    script = init["command"][0].replace("$$", "$").replace("/tmp/", f"{tmp_path}/")
    stub = f'mc() {{ echo "mc $*" >> {tmp_path}/calls; }}\n'
    env = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in init["environment"].items()}}
    subprocess.run(["sh", "-ec", stub + script], env=env, check=True, timeout=30)
    calls = (tmp_path / "calls").read_text().splitlines()
    buckets = init["environment"]["BUCKETS"].split()
    for bucket in buckets:
        assert f"mc mb --ignore-existing local/{bucket}" in calls
        assert f"mc version enable local/{bucket}" in calls
    policy = json.loads((tmp_path / "mlplatform-policy.json").read_text())
    resources = [set(statement["Resource"]) for statement in policy["Statement"]]
    assert resources == [
        {f"arn:aws:s3:::{b}" for b in buckets},
        {f"arn:aws:s3:::{b}/*" for b in buckets},
    ]
    app = init["environment"]["APP_ACCESS_KEY"]
    assert f"mc admin policy attach local mlplatform --user {app}" in calls
    assert not any("readwrite" in call for call in calls)


def test_mlflow_settings_match_the_server(services, settings):
    mlflow = services["mlflow"]
    command = mlflow["command"]
    tracking = urlsplit(settings.tracking_uri)
    assert tracking.hostname == "mlflow"
    assert str(tracking.port) == _flag(command, "--port")
    assert _flag(command, "--default-artifact-root") == settings.artifact_uri
    assert "--no-serve-artifacts" in command[-1]  # clients write to S3 themselves
    backend = urlsplit(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"])
    assert backend.hostname == "postgres"
    assert backend.path.lstrip("/") in _init_databases()
    assert f"mlflow:{tracking.port}" in _flag(command, "--allowed-hosts").split(",")


def test_object_storage_settings_match_minio(services, settings):
    minio_port = _flag(services["minio"]["command"], "--address").rsplit(":", 1)[1]
    endpoint = f"http://minio:{minio_port}"
    env = services["airflow-scheduler"]["environment"]
    assert settings.s3_endpoint_url == endpoint
    assert env["AWS_ENDPOINT_URL_S3"] == endpoint
    assert env["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    created = set(services["minio-init"]["environment"]["BUCKETS"].split())
    used = {_bucket(settings.storage), _bucket(settings.dvc_remote_url)}
    used.add(_bucket(settings.artifact_uri))
    assert used == created, f"buckets used {sorted(used)} vs created {sorted(created)}"
    # the application's key is the user minio-init creates, not MinIO's root
    init = services["minio-init"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] == init["APP_ACCESS_KEY"]
    assert env["AWS_SECRET_ACCESS_KEY"] == init["APP_SECRET_KEY"]
    assert env["AWS_ACCESS_KEY_ID"] != services["minio"]["environment"]["MINIO_ROOT_USER"]


def test_feast_settings_match_redis_and_the_production_yaml(services, settings):
    env = services["airflow-scheduler"]["environment"]
    assert settings.feast_online_store == "redis"
    address, *options = settings.feast_redis_connection.split(",")
    assert address == "redis:6379"  # redis-server's default port (no --port in its command)
    assert "--port" not in services["redis"]["command"]
    password = dict(o.split("=", 1) for o in options)["password"]
    assert password == _flag(services["redis"]["command"], "--requirepass")
    production = yaml.safe_load(FEAST_PRODUCTION_YAML.read_text())
    assert production["online_store"]["type"] == settings.feast_online_store
    assert _feast_yaml_vars()
    for var in _feast_yaml_vars():
        assert env.get(var), f"{FEAST_PRODUCTION_YAML.name} reads ${{{var}}}: not set"
    assert production["online_store"]["connection_string"] == "${MLP_FEAST_REDIS_CONNECTION}"
    registry = urlsplit(env["MLP_FEAST_REGISTRY_URL"])
    assert registry.hostname == "postgres"
    assert registry.path.lstrip("/") in _init_databases()


def test_tf_serving_reads_the_promoted_model_base(services, settings):
    serving = services["tf-serving"]
    command = serving["command"]
    models_dir = str(settings.models_dir)
    # the same volume at the same path: models.config's absolute base_path values resolve
    assert _volume_target(services["airflow-scheduler"], "models") == models_dir
    assert _volume_target(serving, "models") == models_dir
    assert _flag(command, "--model_config_file") == f"{models_dir}/{MODELS_CONFIG}"
    assert settings.serving_host == "tf-serving"
    assert str(settings.serving_port) == _flag(command, "--rest_api_port")
    assert str(settings.serving_grpc_port) == _flag(command, "--port")
    assert _flag(command, "--enable_batching") == "true"
    batching = _flag(command, "--batching_parameters_file")
    assert _volume_target(serving, str(REPO / "docker" / "tfserving" / "batching.config")) == (
        batching
    )
    assert _flag(command, "--model_config_file_poll_wait_seconds") != "0"  # sees promotions


def test_tf_serving_image_matches_the_locked_serving_api(services):
    lock = (REPO / "uv.lock").read_text()
    match = re.search(r'name = "tensorflow-serving-api"\nversion = "([^"]+)"', lock)
    assert match
    assert services["tf-serving"]["image"] == f"tensorflow/serving:{match.group(1)}"


def _batching_parameters_class():
    """TF Serving's ``BatchingParameters`` message (session_bundle_config.proto), which the
    tensorflow-serving-api wheel does not ship: its fields are declared here as in the proto
    (wrappers for the numbers) so that the file is parsed by protobuf's strict text format."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="batching_parameters.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    label = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ]
    for name, number, type_name in fields:
        message.field.add(
            name=name,
            number=number,
            type=label.TYPE_MESSAGE,
            type_name=type_name,
            label=label.LABEL_OPTIONAL,
        )
    message.field.add(
        name="allowed_batch_sizes", number=6, type=label.TYPE_INT64, label=label.LABEL_REPEATED
    )
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=label.TYPE_BOOL,
        label=label.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def test_batching_parameters_parse():
    from google.protobuf import text_format

    params = _batching_parameters_class()()
    text_format.Parse((REPO / "docker" / "tfserving" / "batching.config").read_text(), params)
    assert params.max_batch_size.value >= 1
    assert 0 < params.batch_timeout_micros.value <= 100_000  # at most 0.1 s added latency
    assert params.num_batch_threads.value >= 1


def test_batching_parser_rejects_unknown_fields():
    from google.protobuf import text_format

    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 8 }", _batching_parameters_class()())


def test_airflow_image_context_has_what_the_stack_runs(services):
    """The allowlist .dockerignore lets in every package, the DAGs, plugins and pipelines."""
    ignore = (REPO / "docker" / "airflow.Dockerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    pyproject = (REPO / "pyproject.toml").read_text()
    packages = re.search(r"packages = \[([^\]]+)\]", pyproject).group(1)
    needed = {p.strip().strip('"') for p in packages.split(",")}
    needed |= {"dags", "plugins", "pipelines", "feature_repo", "great_expectations"}
    needed |= {"pyproject.toml", "uv.lock", "scripts/install_horovod.sh"}
    assert needed <= allowed, sorted(needed - allowed)
    for path in needed:
        assert Path(REPO, path).exists(), path
