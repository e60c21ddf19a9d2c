"""No secret in clear (issue 16, item 6): secrets reach the deployment only from the environment
(compose's env file), Kubernetes Secrets or AWS Secrets Manager, never from a file of the
repository, an image's build arguments or ENV, or a rendered manifest.

Two kinds of checks:

* structural: every secret-looking setting of docker-compose.yml is a ``${VAR:?}`` reference, and
  in the rendered file (``docker-compose config`` with *sentinel* secrets) every secret-looking
  value is one of the sentinels, so it provably came from the environment; the Dockerfiles declare
  no secret ARG/ENV; the trainer pod and MPIJob that mlplatform.k8s renders carry credentials
  only by ``secretKeyRef``/``secretRef``;
* a scanner: checkov's secrets framework (detect-secrets' detectors: high-entropy strings, basic
  auth in URIs, AWS keys, private keys ...) over those files and the rendered manifests finds
  nothing, and does find the secrets that scripts/compose_env.sh generates once they are rendered
  in (the positive control); one checkov run serves every test (tests/deploy_scan.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy_render import COMPOSE_SECRETS, render_compose, run_compose_config
from tests.deploy_scan import (
    checkov_report,
    compose_env_secrets,
    describe,
    rendered_trainer_manifests,
    under,
)

#: names of settings that hold a secret value
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|FERNET|PRIVATE|ACCESS_KEY|API_KEY|AUTH", re.I
)
#: names that match SECRET_NAME but hold a *reference* (the name of a Secret, a file path, a flag)
REFERENCES = {
    "MLP_K8S_S3_SECRET",
    "MLP_K8S_MLFLOW_SECRET",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "auth_manager",  # airflow.cfg [core] keys of the Helm values: a class path, user:role pairs
    "simple_auth_manager_users",
}
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) for every string in a YAML/JSON tree (list items inherit their list's key)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str):
        yield key, node


def _credentials_in(text: str) -> list[str]:
    """Credential values embedded in one string: URI passwords, ``password=`` options,
    ``--requirepass`` arguments."""
    found = []
    for word in shlex.split(text, posix=True) if "://" in text or "--" in text else [text]:
        for token in re.split(r"[\s,\"']+", word):
            if "://" in token and "@" in token:
                password = urlsplit(token).password
                if password:
                    found.append(password)
    found += re.findall(r"password=([^,;\s\"']+)", text)
    found += re.findall(r"--requirepass[ =]+\"?([^\s\"]+)", text)
    return found


def _compose_command_secrets(service: dict) -> list[str]:
    command = service.get("command") or []
    words = command if isinstance(command, list) else shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--requirepass"]


# --------------------------------------------------------------------------- docker-compose


def test_compose_file_writes_no_secret():
    """In the file itself every secret-named setting is a ``${VAR:?}`` reference."""
    source = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = 0
    for key, value in _strings(source):
        if SECRET_NAME.search(key) and key not in REFERENCES:
            checked += 1
            assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", value), f"{key}: {value!r} is written in"
        for credential in _credentials_in(value):
            assert re.fullmatch(r"\$\$?\{?\w+(:\?[^}]*)?\}?", credential), (key, credential)
    assert checked >= len(COMPOSE_SECRETS)


def test_rendered_compose_secrets_all_come_from_the_environment(tmp_path):
    rendered = render_compose(tmp_path)
    sentinels = set(COMPOSE_SECRETS.values())
    checked = 0
    for name, service in rendered["services"].items():
        for key, value in _strings(service):
            if SECRET_NAME.search(key) and key not in REFERENCES:
                checked += 1
                assert value in sentinels, f"{name}: {key} = {value!r} is not from the env file"
            for credential in _credentials_in(value):
                # $$VAR: read by the container's shell from its environment at run time
                if not credential.startswith("$$"):
                    checked += 1
                    assert credential in sentinels, f"{name}: {key} embeds {credential!r}"
        for credential in _compose_command_secrets(service):
            assert credential in sentinels, f"{name}: --requirepass {credential!r}"
    assert checked >= len(COMPOSE_SECRETS)


def test_compose_env_script_generates_every_secret_privately(tmp_path):
    first = compose_env_secrets(tmp_path / "a")
    second = compose_env_secrets(tmp_path / "b")
    assert set(first) == set(COMPOSE_SECRETS)  # exactly what docker-compose.yml reads
    assert all(len(v) >= 12 for v in first.values())
    assert not set(first.values()) & set(second.values())  # fresh random values each time
    assert ((tmp_path / "a" / "generated.env").stat().st_mode & 0o777) == 0o600
    # an existing file is kept: rotating is a deliberate edit, not a re-run
    assert compose_env_secrets(tmp_path / "a") == first


def test_rendering_without_the_env_file_fails_rather_than_defaulting(tmp_path):
    out = run_compose_config(tmp_path, {})
    assert out.returncode != 0
    assert "scripts/compose_env.sh" in out.stderr  # the message says how to make them


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_declares_no_secret_arg_or_env(dockerfile):
    text = re.sub(r"\\\n", " ", dockerfile.read_text())  # join continuation lines
    declared = []
    for line in text.splitlines():
        match = re.match(r"^\s*(ARG|ENV)\s+(.*)$", line)
        if match:
            declared += re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", match.group(2))
    assert declared, "no ARG/ENV parsed"
    for name, value in declared:
        assert not SECRET_NAME.search(name), f"{dockerfile.name}: {name} looks like a secret"
        assert not _credentials_in(value), f"{dockerfile.name}: {name} carries credentials"


# --------------------------------------------------------------------------- Kubernetes


def test_rendered_trainer_manifests_take_credentials_from_secrets(mlp_home):
    manifests = rendered_trainer_manifests()
    by_ref = 0
    for manifest in manifests:
        text = json.dumps(manifest)
        assert "MLFLOW_TRACKING_URI" in text
        for key, value in _strings(manifest):
            assert not _credentials_in(value), f"{key} carries a credential"
        containers = [
            c
            for node in _walk(manifest)
            if isinstance(node, dict) and "containers" in node
            for c in node["containers"]
        ]
        for container in containers:
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and env["name"] not in REFERENCES:
                    assert "value" not in env, f"{env['name']} is a literal"
                    assert "secretKeyRef" in env["valueFrom"]
                    by_ref += 1
            assert {"secretRef": {"name": "mlplatform-s3"}} in container.get("envFrom", [])
    assert by_ref > 0


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_kubernetes_files_hold_no_secret():
    checked = 0
    for path in (REPO / "deploy" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            pairs = list(_strings(doc))
            # env lists ({name, value}) of the Helm values: judge the value by the name
            pairs += [(e["name"], e.get("value", "")) for e in doc.get("env", [])]
            for key, value in pairs:
                checked += 1
                assert not _credentials_in(value), f"{path.name}: {key}"
                if SECRET_NAME.search(key) and not key.endswith("SecretName"):
                    assert key in REFERENCES or value == "", f"{path.name}: {key} = {value!r}"
    assert checked > 50


# --------------------------------------------------------------------------- scanner


def test_secret_scanner_finds_none_in_deployment_files():
    report = checkov_report("secrets")
    leaked = under(report["failed"], "/repo/") + under(report["failed"], "/rendered/")
    assert not leaked, describe(leaked)


def test_secret_scanner_catches_secrets_rendered_into_the_stack():
    """Positive control: the stack rendered with compose_env.sh's secrets is caught."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed: no rendered stack for the positive control")
    report = checkov_report("secrets")
    caught = under(report["failed"], "/hot/rendered-compose.yml")
    assert caught, "the scanner missed the secrets rendered into the compose file"
