"""Changing the installed license."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from licensing.keys import trusted_keys
from licensing.models import InstalledLicense
from licensing.selectors import LicenseInfo, license_cache_clear, license_clock, license_get
from licensing.verification import (
    ErrorCode,
    LicenseError,
    State,
    format_time,
    license_state,
    verify,
)

logger = logging.getLogger(__name__)


def license_install(*, text: str, now: datetime | None = None) -> LicenseInfo:
    """Verify ``text`` and make it the installed license, or raise LicenseError.

    A refused license leaves the installed one untouched. An already expired license is
    refused too: installing it could only replace a working license with a dead one.
    """
    text = text.strip()
    # Created outside the transaction: the appliance id must survive a refused install.
    InstalledLicense.load()
    with transaction.atomic():
        row = InstalledLicense.objects.select_for_update().get(pk=InstalledLicense.SINGLETON_ID)
        effective, _ = license_clock(row=row, now=now or timezone.now())
        lic = verify(text, trusted_keys(), now=effective, appliance_id=str(row.appliance_id))
        if license_state(lic, effective) is State.EXPIRED:
            raise LicenseError(
                ErrorCode.EXPIRED,
                f"license {lic.license_id} expired on {format_time(lic.expires_at)} and its "
                "grace period is over; ask the vendor for a renewed license",
            )
        row.text = text
        row.installed_at = effective
        row.save(update_fields=["text", "installed_at"])
    logger.info("Installed license %s for %s", lic.license_id, lic.customer)
    # Other processes pick the new license up when their cache entry runs out.
    license_cache_clear()
    return license_get(now=now)
