"""The license as people read it, shared by `license_show`, `license_install` and the admin."""

from __future__ import annotations

from datetime import datetime

from licensing.selectors import LicenseInfo
from licensing.verification import format_time


def _when(value: datetime | None, none: str) -> str:
    return none if value is None else format_time(value)


def license_rows(info: LicenseInfo) -> list[tuple[str, str]]:
    """Label/value pairs, in the order an operator reads them."""
    limits = ", ".join(f"{name}={value}" for name, value in sorted(info.limits.items()))
    licensed = info.license_id is not None
    return [
        ("State", str(info.state)),
        ("Reason", info.reason),
        ("Customer", info.customer or "-"),
        ("License id", info.license_id or "-"),
        ("Features", ", ".join(info.features) or "-"),
        ("Limits", limits or "-"),
        ("Issued", _when(info.issued_at, "-")),
        ("Expires", _when(info.expires_at, "never (perpetual)" if licensed else "-")),
        ("Grace ends", _when(info.grace_ends_at, "-")),
        ("Days left", "-" if info.days_left is None else str(info.days_left)),
        ("Appliance id", info.appliance_id),
    ]


def license_text(info: LicenseInfo) -> str:
    return "\n".join(f"{label + ':':<14}{value}" for label, value in license_rows(info))
