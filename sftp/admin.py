"""Admin for CDR sources: the password is typed in a form field and stored hashed."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import password_validation
from django.contrib.auth.hashers import make_password
from django.http import HttpRequest

from sftp.models import CdrSource


class CdrSourceForm(forms.ModelForm):
    new_password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="The password CUCM logs in with. Leave empty to keep the current one.",
    )

    class Meta:
        model = CdrSource
        fields = ["name", "username", "new_password", "cluster_id", "enabled"]

    def clean_new_password(self) -> str:
        password = self.cleaned_data["new_password"]
        if not password and self.instance.pk is None:
            raise forms.ValidationError("A new source needs a password.")
        if password:
            password_validation.validate_password(password)
        return password


@admin.register(CdrSource)
class CdrSourceAdmin(admin.ModelAdmin):
    form = CdrSourceForm
    list_display = [
        "name",
        "username",
        "cluster_id",
        "enabled",
        "last_upload_at",
        "files_received",
        "bytes_received",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "username", "cluster_id"]
    readonly_fields = ["last_upload_at", "files_received", "bytes_received", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "username", "new_password", "cluster_id", "enabled"]}),
        ("Received", {"fields": readonly_fields}),
    ]

    def save_model(self, request: HttpRequest, obj: CdrSource, form: Any, change: bool) -> None:
        if form.cleaned_data["new_password"]:
            obj.password = make_password(form.cleaned_data["new_password"])
        super().save_model(request, obj, form, change)
