"""What the premium webhook feature asks of the license before it acts."""

from __future__ import annotations

from datetime import datetime

from rest_framework import status
from rest_framework.exceptions import APIException

from licensing.selectors import LicenseInfo, license_get
from licensing.verification import WEBHOOKS_FEATURE, State

INSTALL_HINT = (
    "Install a Call Telemetry Premium license that includes cdr_webhooks: "
    "`python manage.py license_install FILE`, PUT /api/v1/license/, or the admin License page."
)


def _why_not(info: LicenseInfo) -> str | None:
    if info.feature_enabled(WEBHOOKS_FEATURE):
        return None
    if info.state is State.COMMUNITY:
        return f"Webhooks need a premium license (license state: community). {info.reason}"
    if info.state is State.EXPIRED:
        return f"Webhooks are disabled (license state: expired). {info.reason}"
    return (
        f"Webhooks are disabled: license {info.license_id} (license state: {info.state}) "
        f"does not include the {WEBHOOKS_FEATURE} feature."
    )


def _problem(info: LicenseInfo) -> str | None:
    why_not = _why_not(info)
    return None if why_not is None else f"{why_not} {INSTALL_HINT}"


def webhooks_license_problem(*, now: datetime | None = None) -> str | None:
    """None when webhooks may be used; otherwise why not and what to do, for people."""
    return _problem(license_get(now=now))


def enabled_webhooks_limit(*, now: datetime | None = None) -> int | None:
    """How many webhooks may be enabled at once; None means the license sets no cap."""
    return license_get(now=now).limit("webhooks")


class LicenseRequired(APIException):
    """HTTP 403 for a premium action without the license for it.

    Body: ``{"detail": <reason and what to do>, "code": "license_required",
    "license_state": <state>}``.
    """

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "license_required"

    def __init__(self, *, reason: str, state: State) -> None:
        super().__init__(
            detail={"detail": reason, "code": self.default_code, "license_state": str(state)}
        )
        self.reason = reason
        self.state = state


def require_webhooks_license(*, now: datetime | None = None) -> None:
    """Raise LicenseRequired (HTTP 403 in DRF views) unless webhooks are licensed."""
    info = license_get(now=now)
    problem = _problem(info)
    if problem is not None:
        raise LicenseRequired(reason=problem, state=info.state)
