from __future__ import annotations

import uuid

from django.db import models


class InstalledLicense(models.Model):
    """The appliance's one license row: raw text, appliance id and clock high-water mark.

    Only the signed text is stored; everything shown about the license is re-derived from
    it on load, so editing this table by hand cannot grant anything.
    """

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    text = models.TextField(blank=True, default="", help_text="The license line as installed.")
    appliance_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    clock_high_water = models.DateTimeField(
        null=True, blank=True, help_text="Latest time this appliance has seen."
    )
    installed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "license"
        verbose_name_plural = "license"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="licensing_single_row"),
        ]

    def __str__(self) -> str:
        return f"License of appliance {self.appliance_id}"

    @classmethod
    def load(cls) -> InstalledLicense:
        """The row, created with a fresh appliance id the first time anything asks."""
        row, _ = cls.objects.get_or_create(pk=cls.SINGLETON_ID)
        return row
