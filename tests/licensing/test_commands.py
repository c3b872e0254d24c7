"""license_keygen → license_issue → license_install → license_show, and their refusals."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings

from licensing.models import InstalledLicense
from licensing.selectors import license_get
from licensing.verification import State, load_public_key, verify
from tests.licensing.conftest import MakeLicense

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, **kwargs: object) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def manage(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LICENSE_PUBLIC_KEYS"}
    env["DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def keygen(out_dir: Path) -> dict[str, str]:
    lines = run("license_keygen", "--out-dir", str(out_dir)).splitlines()
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    return {"kid": fields["kid"], "public": fields["public key"]}


@pytest.mark.django_db
def test_round_trip_through_manage_py(tmp_path: Path, settings: Settings) -> None:
    keys_dir = tmp_path / "vendor"
    keys_dir.mkdir()
    made = manage("license_keygen", "--out-dir", str(keys_dir), data_dir=tmp_path / "var")
    assert made.returncode == 0, made.stderr
    kid = made.stdout.split("kid: ", 1)[1].split()[0]
    env_line = next(x for x in made.stdout.splitlines() if x.startswith("LICENSE_PUBLIC_KEYS="))
    settings.LICENSE_PUBLIC_KEYS = json.loads(env_line.split("=", 1)[1])

    appliance_id = license_get().appliance_id
    issued = manage(
        "license_issue",
        *("--private-key", str(keys_dir / f"{kid}.key"), "--kid", kid),
        *("--customer", "Acme Voice", "--expires", "never"),
        *("--features", "cdr_webhooks", "--limit", "webhooks=50"),
        *("--appliance-id", appliance_id, "--grace-days", "30"),
        data_dir=tmp_path / "var",
    )
    assert issued.returncode == 0, issued.stderr
    license_file = tmp_path / "acme.lic"
    license_file.write_text(issued.stdout)

    assert "License installed." in run("license_install", str(license_file))
    shown = run("license_show")
    assert "State:        active" in shown
    assert "Customer:     Acme Voice" in shown
    assert "Features:     cdr_webhooks" in shown
    assert "Limits:       webhooks=50" in shown
    assert "Expires:      never (perpetual)" in shown
    assert f"Appliance id: {appliance_id}" in shown
    assert "License id:   LIC-" in shown


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    result = manage(
        "license_issue",
        *("--private-key", str(tmp_path / "missing.key"), "--kid", "k"),
        *("--customer", "Acme", "--expires", "never", "--features", "cdr_webhooks"),
        data_dir=tmp_path / "var",
    )
    assert result.returncode != 0
    assert "Cannot read --private-key" in result.stderr
    assert "Traceback" not in result.stderr


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    made = keygen(tmp_path)
    private = tmp_path / f"{made['kid']}.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / f"{made['kid']}.pub").read_text().strip() == made["public"]
    assert load_public_key(made["public"])


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    run("license_keygen", "--out-dir", str(tmp_path), "--kid", "vendor-2031")
    with pytest.raises(CommandError, match="already exists"):
        run("license_keygen", "--out-dir", str(tmp_path), "--kid", "vendor-2031")


def test_keygen_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not a directory"):
        run("license_keygen", "--out-dir", str(tmp_path / "nope"))


@pytest.fixture
def vendor(tmp_path: Path) -> dict[str, str]:
    made = keygen(tmp_path)
    return {**made, "key": str(tmp_path / f"{made['kid']}.key")}


def issue_args(vendor: dict[str, str], *extra: str) -> list[str]:
    return [
        "license_issue",
        *("--private-key", vendor["key"], "--kid", vendor["kid"], "--customer", "Acme Voice"),
        *extra,
    ]


def test_issue_signs_what_was_asked(vendor: dict[str, str]) -> None:
    text = run(
        *issue_args(
            vendor,
            *("--expires", "2099-06-30", "--features", "cdr_webhooks"),
            *("--limit", "webhooks=5", "--grace-days", "3", "--license-id", "LIC-42"),
        )
    ).strip()
    lic = verify(text, {vendor["kid"]: load_public_key(vendor["public"])}, now=datetime.now(UTC))
    assert lic.license_id == "LIC-42" and lic.customer == "Acme Voice"
    assert lic.expires_at == datetime(2099, 6, 30, 23, 59, 59, tzinfo=UTC)
    assert lic.limits == {"webhooks": 5} and lic.grace_days == 3
    assert lic.features == frozenset({"cdr_webhooks"}) and lic.appliance_id is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--expires", "soon", "--features", "cdr_webhooks"], "--expires 'soon'"),
        (["--expires", "2001-01-01", "--features", "cdr_webhooks"], "in the past"),
        (["--expires", "never", "--features", "cdr_webhook"], "unknown cdr_webhook"),
        (["--expires", "never", "--features", "cdr_webhooks", "--limit", "webhooks"], "NAME=N"),
        (["--expires", "never", "--features", "cdr_webhooks", "--limit", "webhooks=-1"], "NAME=N"),
        (["--expires", "never", "--features", "cdr_webhooks", "--limit", "users=5"], "unknown"),
        (
            ["--expires", "never", "--features", "cdr_webhooks", "--appliance-id", "box-1"],
            "not a UUID",
        ),
        (
            ["--expires", "never", "--features", "cdr_webhooks", "--grace-days", "-2"],
            "--grace-days",
        ),
    ],
)
def test_issue_refuses_bad_input(vendor: dict[str, str], extra: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*issue_args(vendor, *extra))


def test_issue_refuses_a_file_that_is_not_a_private_key(
    vendor: dict[str, str], tmp_path: Path
) -> None:
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("hello")
    vendor = {**vendor, "key": str(not_a_key)}
    with pytest.raises(CommandError, match="not an unencrypted PEM private key"):
        run(*issue_args(vendor, "--expires", "never", "--features", "cdr_webhooks"))


@pytest.mark.django_db
def test_install_reads_standard_input_with_a_dash(make_license: MakeLicense) -> None:
    output = run("license_install", "-", stdin=io.StringIO(make_license() + "\n"))
    assert "License installed." in output and "State:        active" in output
    assert license_get().state is State.ACTIVE


@pytest.mark.django_db
def test_install_refuses_a_bad_license_and_keeps_the_old_one(
    make_license: MakeLicense, tmp_path: Path
) -> None:
    good = make_license()
    run("license_install", "-", stdin=io.StringIO(good))
    bad = tmp_path / "bad.lic"
    bad.write_text(make_license(issued_at=datetime.now(UTC) + timedelta(days=2)))
    with pytest.raises(CommandError, match=r"License refused \(not_yet_valid\)"):
        run("license_install", str(bad))
    assert InstalledLicense.objects.get().text == good


@pytest.mark.django_db
def test_install_refuses_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Cannot read license file"):
        run("license_install", str(tmp_path / "missing.lic"))


@pytest.mark.django_db
def test_show_without_a_license_is_community_and_succeeds() -> None:
    shown = run("license_show")
    assert "State:        community" in shown
    assert "Customer:     -" in shown
    assert f"Appliance id: {license_get().appliance_id}" in shown
