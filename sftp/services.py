"""Writes for CDR sources: create, change, authenticate a login, count an upload."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.db.models import F
from django.utils import timezone

from sftp.models import CdrSource


def cdr_source_create(
    *, name: str, username: str, password: str, cluster_id: str = "", enabled: bool = True
) -> CdrSource:
    validate_password(password)
    source = CdrSource(
        name=name,
        username=username,
        password=make_password(password),
        cluster_id=cluster_id,
        enabled=enabled,
    )
    source.full_clean()
    source.save()
    return source


def cdr_source_update(
    *,
    source: CdrSource,
    password: str | None = None,
    name: str | None = None,
    username: str | None = None,
    cluster_id: str | None = None,
    enabled: bool | None = None,
) -> CdrSource:
    """Change the given fields; a password is validated and stored hashed."""
    changes = {"name": name, "username": username, "cluster_id": cluster_id, "enabled": enabled}
    for field, value in changes.items():
        if value is not None:
            setattr(source, field, value)
    if password is not None:
        validate_password(password)
        source.password = make_password(password)
    source.full_clean()
    source.save()
    return source


def cdr_source_authenticate(username: str, password: str) -> CdrSource | None:
    """The enabled source with this login, or None."""
    source = CdrSource.objects.filter(username=username).first()
    if source is None:
        # Hash anyway, so a wrong username costs as long as a wrong password.
        make_password(password)
        return None

    def upgrade(raw: str) -> None:
        CdrSource.objects.filter(pk=source.pk).update(password=make_password(raw))

    if not check_password(password, source.password, setter=upgrade):
        return None
    return source if source.enabled else None


def cdr_source_record_upload(*, source_id: int, size: int, at: datetime | None = None) -> None:
    CdrSource.objects.filter(pk=source_id).update(
        files_received=F("files_received") + 1,
        bytes_received=F("bytes_received") + size,
        last_upload_at=at or timezone.now(),
    )
