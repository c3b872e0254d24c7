"""Reading the license in force: re-verified from the stored text, cached for a few seconds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import monotonic
from typing import Any

from django.core.signals import setting_changed
from django.db.models import Q
from django.utils import timezone

from calltelemetry.caching import BoundedCache
from licensing.keys import trusted_keys
from licensing.models import InstalledLicense
from licensing.verification import (
    License,
    LicenseError,
    State,
    days_left,
    format_time,
    license_state,
    verify,
)

logger = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
# NTP steps and VM snapshots move clocks back by seconds or minutes; a day or more
# backwards looks like someone stretching a license.
CLOCK_ROLLBACK_TOLERANCE = timedelta(days=1)
# Advancing the high-water mark on every evaluation would be a write every few seconds per
# process; its precision only needs to be far below the tolerance.
HIGH_WATER_STEP = timedelta(minutes=1)
# How far past the mark the clock may read and be remembered at once: an appliance that was
# off or idle for less than this needs no proof that the time really passed.
CLOCK_JUMP_TOLERANCE = timedelta(days=1)
# A jump further ahead is remembered once the clock has run on from it this long, in step
# with the monotonic clock: a glitch is corrected sooner, a real date is kept.
CLOCK_JUMP_CONFIRM_AFTER = timedelta(days=1)
# Wall and monotonic clocks may drift apart by NTP slewing (at most 500 ppm) and the
# granularity of the readings.
CLOCK_DRIFT_SECONDS = 60.0
CLOCK_DRIFT_RATE = 0.001


@dataclass(frozen=True)
class LicenseInfo:
    """What the appliance knows about its license; never includes the signed text."""

    state: State
    reason: str
    appliance_id: str
    error_code: str | None = None
    customer: str | None = None
    license_id: str | None = None
    features: tuple[str, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    grace_days: int | None = None
    grace_ends_at: datetime | None = None
    days_left: int | None = None
    evaluated_at: datetime | None = None
    clock_suspect: bool = False

    def feature_enabled(self, feature: str) -> bool:
        return self.state.in_force and feature in self.features

    def limit(self, name: str) -> int | None:
        return self.limits.get(name) if self.state.in_force else None


_cache: BoundedCache[str, LicenseInfo] = BoundedCache(max_entries=1, max_age=CACHE_SECONDS)


@dataclass(frozen=True)
class _Reading:
    """The system clock and the monotonic clock, read together."""

    wall: datetime
    monotonic: float

    def steady_since(self, earlier: _Reading) -> bool:
        """Whether the system clock moved like the monotonic clock since ``earlier``."""
        elapsed = self.monotonic - earlier.monotonic
        moved = (self.wall - earlier.wall).total_seconds()
        return abs(moved - elapsed) <= CLOCK_DRIFT_SECONDS + CLOCK_DRIFT_RATE * elapsed


# What this process has seen of the clock: its latest reading the mark took in, and the
# first reading of a jump ahead that is not confirmed yet.
_trusted: _Reading | None = None
_jump: _Reading | None = None


def license_cache_clear() -> None:
    """Forget the cached state and this process's clock readings."""
    global _trusted, _jump
    _cache.clear()
    _trusted = _jump = None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "LICENSE_PUBLIC_KEYS":
        license_cache_clear()


def connect_cache_invalidation() -> None:
    setting_changed.connect(_on_setting_changed, dispatch_uid="licensing.cache")


def _jump_confirmed(reading: _Reading) -> bool:
    """Whether a reading far ahead of the mark is real time that passed, by the monotonic
    clock: it ran in step with the system clock since a reading the mark took in, or for
    CLOCK_JUMP_CONFIRM_AFTER since the jump was first seen."""
    global _jump
    if _trusted is not None and reading.steady_since(_trusted):
        return True
    if _jump is None or not reading.steady_since(_jump):
        logger.warning(
            "System clock %s is more than a day ahead of the latest time seen; it is "
            "remembered once it has kept running for a day",
            format_time(reading.wall),
        )
        _jump = reading
        return False
    return reading.monotonic - _jump.monotonic >= CLOCK_JUMP_CONFIRM_AFTER.total_seconds()


def license_clock(*, row: InstalledLicense, now: datetime) -> tuple[datetime, bool]:
    """The time to judge the license at, and whether the system clock looks rolled back.

    The rule: the license is judged at the later of the clock and the high-water mark, the
    latest time this appliance has *confirmed*; the mark only ever moves forward (one
    conditional UPDATE, so concurrent processes cannot move it back). Hence setting the
    clock back never makes an expired license valid again.

    The mark takes in a reading at most CLOCK_JUMP_TOLERANCE (a day) past it at once. A
    reading further ahead is judged at face value but not remembered until the monotonic
    clock confirms that much time really passed: the system clock ran in step with it since
    a reading the mark took in (the appliance was up all along), or for
    CLOCK_JUMP_CONFIRM_AFTER since the jump (a date set after a long shutdown). So a clock
    that jumps years ahead and is corrected within a day expires nothing for good; at worst
    a jump of under a day is remembered, bringing an expiry forward by under a day.
    """
    global _trusted, _jump
    reading = _Reading(now, monotonic())
    high_water = row.clock_high_water
    if high_water is not None and now < high_water + HIGH_WATER_STEP:
        if now >= high_water - CLOCK_ROLLBACK_TOLERANCE:
            _trusted, _jump = reading, None
            return max(now, high_water), False
        logger.warning(
            "System clock %s is more than a day behind the latest time seen %s; "
            "judging the license at %s",
            format_time(now),
            format_time(high_water),
            format_time(high_water),
        )
        return high_water, True
    if high_water is None or now <= high_water + CLOCK_JUMP_TOLERANCE or _jump_confirmed(reading):
        InstalledLicense.objects.filter(
            Q(clock_high_water__isnull=True) | Q(clock_high_water__lt=now),
            pk=row.pk,
        ).update(clock_high_water=now)
        _trusted, _jump = reading, None
    return now, False


def _describe(lic: License, state: State, now: datetime) -> str:
    whom = f"License {lic.license_id} for {lic.customer}"
    if lic.expires_at is None:
        return f"{whom} is perpetual."
    expiry = format_time(lic.expires_at)
    grace_end = format_time(lic.expires_at + timedelta(days=lic.grace_days))
    if state is State.ACTIVE:
        return f"{whom} is valid until {expiry} ({days_left(lic, now)} days left)."
    if state is State.EXPIRING:
        return (
            f"{whom} expires on {expiry} ({days_left(lic, now)} days left); "
            "install a renewed license before then."
        )
    if state is State.GRACE:
        return (
            f"{whom} expired on {expiry}; premium features keep working during the grace "
            f"period, which ends on {grace_end}. Install a renewed license."
        )
    return (
        f"{whom} expired on {expiry} and its grace period ended on {grace_end}; "
        "install a renewed license to use premium features."
    )


def _evaluate(row: InstalledLicense, now: datetime, clock_suspect: bool) -> LicenseInfo:
    appliance_id = str(row.appliance_id)
    common: dict[str, Any] = {
        "appliance_id": appliance_id,
        "evaluated_at": now,
        "clock_suspect": clock_suspect,
    }
    if not row.text:
        return LicenseInfo(
            state=State.COMMUNITY,
            reason="No license is installed: the community edition is running.",
            **common,
        )
    try:
        lic = verify(row.text, trusted_keys(), now=now, appliance_id=appliance_id)
    except LicenseError as exc:
        logger.warning("The installed license is not valid: %s", exc)
        return LicenseInfo(
            state=State.COMMUNITY,
            reason=f"The installed license is not valid: {exc.reason}.",
            error_code=exc.code,
            **common,
        )
    state = license_state(lic, now)
    reason = _describe(lic, state, now)
    if clock_suspect:
        reason += (
            " The system clock is more than a day behind the latest time this appliance "
            f"has seen, so the license is judged at {format_time(now)}."
        )
    return LicenseInfo(
        state=state,
        reason=reason,
        customer=lic.customer,
        license_id=lic.license_id,
        features=tuple(sorted(lic.features)),
        limits=dict(lic.limits),
        issued_at=lic.issued_at,
        expires_at=lic.expires_at,
        grace_days=lic.grace_days,
        grace_ends_at=lic.grace_ends_at,
        days_left=days_left(lic, now),
        **common,
    )


def license_get(*, now: datetime | None = None) -> LicenseInfo:
    """The license in force. Pass ``now`` to judge at a given time (uncached)."""
    if now is None and (cached := _cache.get("in force")) is not None:
        return cached
    row = InstalledLicense.load()
    effective, suspect = license_clock(row=row, now=now or timezone.now())
    info = _evaluate(row, effective, suspect)
    if now is None:
        _cache.set("in force", info)
    return info
