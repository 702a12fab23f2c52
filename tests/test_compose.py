"""The production deployment: docker-compose.yml, the Dockerfile and `.env.example` agree with the code."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from dotenv import dotenv_values
from pydantic import TypeAdapter

from core.config import Settings
from tests.conftest import ROOT

SERVICES = {"postgres", "redis", "migrate", "api", "worker", "scheduler", "flower"}
APP_SERVICES = ("api", "worker", "scheduler")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env_name(field: str) -> str:
    return {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(field, f"PFSYNC_{field.upper()}")


def test_compose_names_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_service_reads_the_one_env_file(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        env_file = service.get("env_file")
        assert env_file in (".env", [".env"]), name


def test_the_processes_start_once_the_schema_is_migrated(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["command"] == ["pfsync", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in APP_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert services[name]["command"][:2] == ["pfsync", name]


def test_servers_and_their_health_checks(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    redis = services["redis"]
    assert redis["image"] == "redis:7"
    assert "redis-cli ping" in str(redis["healthcheck"]["test"])
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "/readyz" in str(services["api"]["healthcheck"]["test"])


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_the_api_sums_http_metrics_over_its_processes(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    directory = api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert any(mount.startswith(directory + ":") for mount in api["tmpfs"])


def test_flower_watches_the_broker(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower")
    assert "$$REDIS_URL" in " ".join(flower["command"])
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_image_installs_the_locked_package_on_python_311_slim() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile


def test_env_example_lists_every_setting_with_its_default() -> None:
    listed = dotenv_values(ROOT / ".env.example")
    for field, info in Settings.model_fields.items():
        name = env_name(field)
        assert name in listed, f"{name} is missing from .env.example"
        if field in ("database_url", "redis_url"):
            continue  # the compose services' addresses
        raw = listed[name]
        assert raw is not None
        assert info.annotation is not None
        assert TypeAdapter(info.annotation).validate_python(raw) == info.default, name
    for server in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "FLOWER_BASIC_AUTH"):
        assert listed.get(server), server
    assert listed["DATABASE_URL"] == (
        f"postgresql://{listed['POSTGRES_USER']}:{listed['POSTGRES_PASSWORD']}@postgres:5432/{listed['POSTGRES_DB']}"
    )
