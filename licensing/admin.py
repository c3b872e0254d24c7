from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from licensing.display import license_rows
from licensing.models import InstalledLicense
from licensing.selectors import license_get
from licensing.services import license_install
from licensing.verification import MAX_LICENSE_CHARS, LicenseError


class LicenseInstallForm(forms.Form):
    license = forms.CharField(
        max_length=MAX_LICENSE_CHARS,
        widget=forms.Textarea(attrs={"rows": 5, "cols": 100, "spellcheck": "false"}),
        help_text="Paste the license line (CTLIC1.…) exactly as received.",
    )


@admin.register(InstalledLicense)
class InstalledLicenseAdmin(admin.ModelAdmin):
    """One page: the license in force and a form to install another.

    The row is never edited field by field: only a verified license text may be written.
    """

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return redirect("admin:licensing_installedlicense_changelist")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        can_install = self.has_change_permission(request)
        form = LicenseInstallForm(request.POST if request.method == "POST" else None)
        if request.method == "POST":
            if not can_install:
                raise PermissionDenied
            if self._install(request, form):
                return redirect(request.path)
        info = license_get()
        context = {
            **self.admin_site.each_context(request),
            "title": "License",
            "opts": self.opts,
            "rows": license_rows(info),
            "form": form if can_install else None,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/licensing/license.html", context)

    def _install(self, request: HttpRequest, form: LicenseInstallForm) -> bool:
        """Install the posted license; on refusal the reason goes onto the form."""
        if not form.is_valid():
            return False
        try:
            info = license_install(text=form.cleaned_data["license"])
        except LicenseError as exc:
            form.add_error("license", f"License refused ({exc.code}): {exc.reason}.")
            return False
        self.log_change(request, InstalledLicense.load(), f"Installed {info.license_id}")
        self.message_user(request, f"License {info.license_id} installed.")
        return True
