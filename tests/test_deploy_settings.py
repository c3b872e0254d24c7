"""Production settings: `check --deploy` is clean behind TLS, and nothing is left to chance."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PRODUCTION = {
    "DJANGO_ENV": "production",
    "HTTPS": "true",
    "SECRET_KEY": "x7Kq2vN9pL4mR8sT1wY6zB3cF5hJ0dG7eA2uQ9iO4kM1nV8rX5tZ3yW6bC0fH2jL",
    "ALLOWED_HOSTS": "cdr.example.com",
    "DEBUG": "false",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env={**clean, "DJANGO_SETTINGS_MODULE": "calltelemetry.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_passes_in_production_behind_tls() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_without_https_the_deploy_check_still_flags_insecure_cookies() -> None:
    # A plain-HTTP deployment is allowed, but not silently: the warnings stay visible.
    result = manage("check", "--deploy", env={**PRODUCTION, "HTTPS": "false"})
    assert "security.W012" in result.stderr and "security.W016" in result.stderr


@pytest.mark.parametrize("name", ["SECRET_KEY", "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(name: str) -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != name}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert f"Invalid setting {name}=''" in result.stderr
    assert "DJANGO_ENV=production" in result.stderr


@pytest.mark.parametrize(("name", "value"), [("HTTPS", "maybe"), ("DJANGO_ENV", "prod")])
def test_a_bad_value_stops_start_up_naming_it(name: str, value: str) -> None:
    result = manage("check", env={**PRODUCTION, name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_the_embedded_appliance_needs_neither() -> None:
    result = manage("check", env={})
    assert result.returncode == 0, result.stderr


def test_behind_tls_http_is_redirected_except_the_container_health_check() -> None:
    probe = (
        "import django; django.setup(); from django.test import Client; c = Client();"
        "print(c.get('/admin/login/').status_code,"
        " c.get('/admin/login/', headers={'X-Forwarded-Proto': 'https'}).status_code,"
        " c.get('/healthz').status_code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={
            **os.environ,
            **PRODUCTION,
            "ALLOWED_HOSTS": "testserver",
            "DJANGO_SETTINGS_MODULE": "calltelemetry.settings",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    redirected, over_tls, health = result.stdout.split()
    assert (redirected, over_tls) == ("301", "200")
    assert health != "301"
