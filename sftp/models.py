"""CDR sources: the SFTP accounts CUCM clusters deliver their CDR/CMR files with."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

# The username names the source's staging folder, so it must be a safe single path part.
username_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z",
    "Letters, digits, '.', '_' and '-' only, starting with a letter or digit (max 64).",
)


class CdrSource(models.Model):
    """One billing-server login, normally one per CUCM cluster."""

    name = models.CharField(max_length=100, unique=True)
    username = models.CharField(max_length=64, unique=True, validators=[username_validator])
    password = models.CharField(
        max_length=256, editable=False, help_text="Django password hash, never the password"
    )
    cluster_id = models.CharField(
        max_length=64,
        blank=True,
        help_text="When set, files whose name carries another cluster id are refused",
    )
    enabled = models.BooleanField(default=True)
    last_upload_at = models.DateTimeField(null=True, blank=True)
    files_received = models.PositiveBigIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "CDR source"

    def __str__(self) -> str:
        return self.name
