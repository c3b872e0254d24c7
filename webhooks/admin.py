"""Admin for webhooks (conditions and headers inline) and the delivery log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from cdr.fields import CDR_FIELDS
from licensing.gating import webhooks_license_problem
from webhooks import credentials
from webhooks.bodies import delivery_body_preview
from webhooks.call_matching import CALL_FIELDS
from webhooks.delivery import MASK
from webhooks.lifecycle import backlog_drain_at, webhooks_with_backlog
from webhooks.matching import field_kind
from webhooks.models import Condition, Delivery, DeliveryAttempt, Header, Webhook
from webhooks.presets import PRESETS, Preset
from webhooks.redaction import MaskedUrl, text_redacted, url_redacted, url_restored
from webhooks.services import (
    delivery_redeliver,
    webhook_resume,
    webhook_set_enabled,
    webhook_test_send,
)
from webhooks.templating import TemplateFailed
from webhooks.validation import (
    Errors,
    WebhookInvalid,
    enable_problem,
    webhook_save,
    webhook_validate,
)


def _field_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    groups: dict[str, list[tuple[str, str]]] = {"Times": [], "Numbers": [], "Text": []}
    label = {"time": "Times", "number": "Numbers", "text": "Text"}
    for spec in CDR_FIELDS:
        groups[label[field_kind(spec)]].append((spec.name, spec.name))
    calls = [(spec.name, spec.name) for spec in CALL_FIELDS]
    return [("Call (call-scope webhooks only)", calls), *groups.items()]


class ConditionForm(forms.ModelForm):
    field = forms.ChoiceField(choices=_field_choices())
    value = forms.CharField(
        required=False,
        help_text="a list is comma-separated; times take epoch, ISO-8601 or Never; call "
        "booleans take true or false",
    )

    class Meta:
        model = Condition
        fields = ["field", "operator", "value", "order"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        value = self.instance.value if self.instance.pk else ""
        self.initial["value"] = ", ".join(map(str, value)) if isinstance(value, list) else value


class HeaderForm(forms.ModelForm):
    value = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="never shown again; leave empty to keep the current value",
    )

    class Meta:
        model = Header
        fields = ["name", "value"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        # Empty means "keep the stored value", which a new row does not have.
        if not data.get("value") and not self.instance.pk and data.get("name"):
            self.add_error("value", "a value is required")
        return data


class RowsFormSet(BaseInlineFormSet):
    """An inline formset that the webhook form can find through the webhook being edited:
    the admin creates the formsets before it validates the form, so the form checks the
    whole definition with the service in its clean()."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.__dict__.setdefault("_admin_rows", {})[self.prefix] = self

    def rows(self) -> list[forms.Form]:
        """The forms that are part of the definition: not deleted, not left blank."""
        return [f for f in self.forms if f.cleaned_data and f not in self.deleted_forms]


class ConditionInline(admin.TabularInline):
    model = Condition
    form = ConditionForm
    formset = RowsFormSet
    extra = 1


class HeaderInline(admin.TabularInline):
    model = Header
    form = HeaderForm
    formset = RowsFormSet
    extra = 0

    def get_extra(self, request: HttpRequest, obj: Webhook | None = None, **kwargs: Any) -> int:
        # H-tmpl: an add form started from a preset shows the preset's headers as rows.
        preset = _preset(request, obj)
        return len(preset.headers) if preset else self.extra


def _preset(request: HttpRequest, obj: Webhook | None) -> Preset | None:
    """The preset an add form was started from (`?preset=teams`), if any."""
    return PRESETS.get(request.GET.get("preset", "")) if obj is None else None


class WebhookForm(forms.ModelForm):
    """The fields of a webhook; every rule is the service's (webhook_validate), which sees the
    conditions and headers formsets too, so the admin and the API refuse the same things."""

    url = forms.URLField(
        max_length=2000,
        assume_scheme="https",
        # Wide enough to read a whole destination, masked credentials included.
        widget=forms.URLInput(attrs={"class": "vURLField", "style": "width: min(48em, 100%)"}),
    )
    new_secret = forms.CharField(
        required=False,
        label="Secret",
        widget=forms.PasswordInput(render_value=False),
        help_text="whsec_… (never shown again); leave empty to keep the current one",
    )
    # Not required: a form posted without it (an older page, a script) keeps the stored
    # scope, record for a new webhook.
    scope = forms.ChoiceField(
        choices=Webhook.Scope.choices,
        required=False,
        initial=Webhook.Scope.RECORD,
        help_text=Webhook._meta.get_field("scope").help_text,
    )
    # H-tmpl. Not required, as `scope`: a form posted without them keeps the stored values.
    method = forms.ChoiceField(
        choices=Webhook.Method.choices, required=False, initial=Webhook.Method.POST
    )
    content_type = forms.CharField(
        max_length=200,
        required=False,
        initial="application/json",
        help_text=Webhook._meta.get_field("content_type").help_text,
    )
    body_template = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 14, "style": "font-family: monospace; width: min(60em, 100%)"}
        ),
        help_text="Jinja2 (sandboxed). Variables: cdr, decoded, meta, name, event_id; in call "
        "scope also call, cdrs, cmrs. Filter: tojson. Empty: the standard JSON body. Start "
        "from a preset: " + ", ".join(f"?preset={key}" for key in PRESETS) + " on the add page.",
    )
    generate_secret = forms.BooleanField(
        required=False,
        help_text="generate a new secret (the replaced one keeps signing beside it for "
        "WEBHOOK_SECRET_OVERLAP seconds)",
    )
    remove_secret = forms.BooleanField(required=False, help_text="stop signing requests")
    # H-state: what enabling a disabled webhook does with the deliveries it held.
    held_on_enable = forms.ChoiceField(
        choices=[("send", "send them, in order"), ("drop", "drop them (skipped, with the reason)")],
        initial="send",
        required=False,
        label="Held deliveries",
        help_text="when this saves a disabled webhook as enabled",
    )

    # --- H-auth: the auth object and TLS settings; secrets are never put on the page -----
    auth_type = forms.ChoiceField(
        choices=Webhook.AuthType.choices,
        initial=Webhook.AuthType.NONE,
        label="Auth",
        required=False,
    )
    auth_username = forms.CharField(required=False, label="Username (basic)")
    auth_password = forms.CharField(
        required=False, label="Password (basic)", widget=forms.PasswordInput(render_value=False)
    )
    auth_token = forms.CharField(
        required=False, label="Token (bearer)", widget=forms.PasswordInput(render_value=False)
    )
    auth_token_url = forms.CharField(required=False, label="Token URL (oauth2)")
    auth_client_id = forms.CharField(required=False, label="Client id (oauth2)")
    auth_client_secret = forms.CharField(
        required=False,
        label="Client secret (oauth2)",
        widget=forms.PasswordInput(render_value=False),
    )
    auth_scope = forms.CharField(required=False, label="Scope (oauth2)")
    ca_bundle = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="PEM certificates trusted for this receiver besides the system's CAs",
    )
    client_cert = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="PEM client certificate, for receivers that check one (mTLS)",
    )
    client_key = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="PEM private key of the client certificate (never shown again)",
    )
    AUTH_SECRETS = {
        "password": "auth_password",
        "token": "auth_token",
        "client_secret": "auth_client_secret",
    }
    # --- end H-auth ----------------------------------------------------------------------

    # The service's error keys, as fields of this form.
    ERROR_FIELDS = {"secret": "new_secret", "auth": "auth_type"}

    class Meta:
        model = Webhook
        fields = [
            "name",
            "url",
            "enabled",
            "scope",
            "meta",
            "method",
            "content_type",
            "body_template",
            "rate_limit_per_minute",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What webhook_save is given once the definition has been checked as a whole.
        self.definition: dict[str, Any] | None = None
        if self.instance.pk:  # credentials in the stored URL are never put on the page
            self.initial["url"] = url_redacted(self.instance.url)
            self.fields[
                "url"
            ].help_text = f"credentials in the URL are shown as {MASK}; leave them so to keep them"
            self._initial_auth_tls()

    def _initial_auth_tls(self) -> None:
        """H-auth: what may be shown of the stored auth and TLS settings; secret fields say
        only whether a value is stored (left empty, they keep it)."""
        stored = self.instance
        for name in ("auth_type", "auth_username", "auth_client_id", "auth_scope"):
            self.initial[name] = getattr(stored, name)
        self.initial["auth_token_url"] = url_redacted(stored.auth_token_url)
        self.initial["ca_bundle"] = stored.ca_bundle
        self.initial["client_cert"] = stored.client_cert
        for name in (*self.AUTH_SECRETS.values(), "client_key"):
            if getattr(stored, name):
                self.fields[name].help_text = "set: leave empty to keep it"

    def clean_url(self) -> str:
        try:
            return url_restored(
                self.cleaned_data["url"], stored=self.instance.url if self.instance.pk else None
            )
        except MaskedUrl as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_meta(self) -> Any:
        # Said here already, in the admin's words, because a JSON list is valid JSON to the field.
        meta = self.cleaned_data["meta"]
        if not isinstance(meta, dict):
            raise forms.ValidationError('meta must be a JSON object, e.g. {"event": "missed call"}')
        return meta

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        problem = webhooks_license_problem()
        if problem:
            raise forms.ValidationError(problem)
        rows: dict[str, RowsFormSet] = self.instance.__dict__.get("_admin_rows", {})
        conditions, headers = rows.get("conditions"), rows.get("headers")
        if self.errors or not all(fs.is_valid() for fs in (conditions, headers) if fs):
            return data  # each part shows its own errors first
        definition = self._definition(data, conditions, headers)
        # H-tmpl: absent from the post (an older page): keep the stored template.
        if "body_template" not in self.data:
            definition["body_template"] = None
        try:
            # The instance still holds the stored values here: it is filled in after clean().
            webhook_validate(webhook=self.instance if self.instance.pk else None, **definition)
        except WebhookInvalid as exc:
            self._show(exc.errors, conditions, headers)
            return data
        self.definition = definition
        return data

    def _definition(
        self, data: dict[str, Any], conditions: RowsFormSet | None, headers: RowsFormSet | None
    ) -> dict[str, Any]:
        if data.get("remove_secret"):
            secret: str | None = ""
        else:
            secret = data.get("new_secret") or None
        return {
            "name": data.get("name"),
            "url": data.get("url"),
            "enabled": bool(data.get("enabled")),
            "scope": data.get("scope") or None,
            "meta": data.get("meta"),
            "method": data.get("method") or None,
            "content_type": data.get("content_type") or None,
            "body_template": data.get("body_template") or "",
            "conditions": None if conditions is None else [
                {key: row.cleaned_data.get(key) for key in ("field", "operator", "value")}
                for row in _condition_rows(conditions)
            ],
            "headers": None if headers is None else [
                {
                    "name": row.cleaned_data.get("name"),
                    # Left empty on a stored row: the service keeps the value stored by name.
                    "value": row.cleaned_data.get("value") or MASK,
                }
                for row in headers.rows()
            ],
            "secret": secret,
            "generate_secret": bool(data.get("generate_secret")) and secret != "",
            "auth": self._auth(data),
            "tls": self._tls(data),
            "rate_limit_per_minute": data.get("rate_limit_per_minute"),  # H-state
        }  # fmt: skip

    def _auth(self, data: dict[str, Any]) -> dict[str, Any]:
        """The auth object from the form; an empty secret field keeps the stored value."""
        auth: dict[str, Any] = {"type": data.get("auth_type") or Webhook.AuthType.NONE}
        for member in ("username", "token_url", "client_id", "scope"):
            auth[member] = data.get(f"auth_{member}") or ""
        for member, column in self.AUTH_SECRETS.items():
            stored = self.instance.pk and getattr(self.instance, column)
            auth[member] = data.get(column) or (MASK if stored else None)
        kept = set(credentials.MEMBERS_OF[Webhook.AuthType(auth["type"])])
        # Members of the other types are left behind when the type changes, not refused.
        return {key: value for key, value in auth.items() if key == "type" or key in kept}

    def _tls(self, data: dict[str, Any]) -> dict[str, Any]:
        cert = data.get("client_cert") or ""
        # No certificate: no key either; a key field left empty keeps the stored key.
        key = (data.get("client_key") or MASK) if cert else ""
        return {"ca_bundle": data.get("ca_bundle") or "", "client_cert": cert, "client_key": key}

    def _show(
        self, errors: Errors, conditions: RowsFormSet | None, headers: RowsFormSet | None
    ) -> None:
        """Put each of the service's errors next to its field or inline row."""
        for key, problems in errors.items():
            formset = {"conditions": conditions, "headers": headers}.get(key)
            if formset is None:
                field = self.ERROR_FIELDS.get(key, key)
                self.add_error(field if field in self.fields else None, problems)
                continue
            rows = _condition_rows(formset) if key == "conditions" else formset.rows()
            for row, problem in zip(rows, problems, strict=False):
                if isinstance(problem, dict):
                    for field, messages_ in problem.items():
                        row.add_error(field if field in row.fields else None, messages_)
                else:  # about the list as a whole, e.g. too many rows
                    formset.non_form_errors().append(problem)
                    break


def _condition_rows(formset: RowsFormSet) -> list[forms.Form]:
    """Conditions in the order the operator gave them (the order column, then the page)."""
    ranked = sorted(
        enumerate(formset.rows()),
        key=lambda item: (item[1].cleaned_data.get("order") or 0, item[0]),
    )
    return [row for _, row in ranked]


# H-state: the webhook's state and backlog, read-only.
STATE = [
    "state_shown", "paused_reason", "paused_at", "failing_since", "consecutive_failures", "backlog",
]  # fmt: skip
STATISTICS = [
    "hit_count", "last_hit_at", "delivered_count", "failed_count", "last_status",
    "last_delivery_at", "deliveries_link", "created_at", "updated_at",
]  # fmt: skip


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    inlines = [ConditionInline, HeaderInline]
    # What fits 1366 px: the state says enabled or not and how long failing (the run's
    # length and the last hit are on the webhook's page).
    list_display = [
        "name", "state_shown", "scope_short", "destination", "hit_count", "delivered_count",
        "failed_count", "backlog", "last_status", "deliveries_link",
    ]  # fmt: skip
    list_filter = ["enabled", "scope"]
    search_fields = ["name", "url"]
    readonly_fields = ["signing", *STATISTICS, *STATE]
    fieldsets = [
        (None, {"fields": ["name", "url", "enabled", "scope", "meta"]}),
        ("Request", {"fields": ["method", "content_type", "body_template"]}),  # H-tmpl
        ("Signing", {"fields": ["signing", "new_secret", "generate_secret", "remove_secret"]}),
        # H-auth
        (
            "Authentication",
            {
                "fields": [
                    "auth_type",
                    "auth_username",
                    "auth_password",
                    "auth_token",
                    "auth_token_url",
                    "auth_client_id",
                    "auth_client_secret",
                    "auth_scope",
                ]
            },
        ),
        ("TLS", {"fields": ["ca_bundle", "client_cert", "client_key"]}),
        ("Statistics", {"fields": STATISTICS}),
        ("Rate limit and state", {"fields": ["rate_limit_per_minute", "held_on_enable", *STATE]}),
    ]
    actions = ["send_test_event", "enable", "disable", "enable_dropping_held", "resume"]

    # --- H-state ---------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Webhook]:
        return webhooks_with_backlog(super().get_queryset(request))

    def get_urls(self) -> list[Any]:
        resume = self.admin_site.admin_view(self.resume_view)
        return [
            path("<int:pk>/resume/", resume, name="webhooks_webhook_resume"),
            *super().get_urls(),
        ]

    def resume_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        webhook = Webhook.objects.filter(pk=pk).first()
        if request.method != "POST" or webhook is None:
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request, webhook) or not self._licensed(request):
            return redirect("admin:webhooks_webhook_change", pk)
        self._resume(request, webhook)
        return redirect("admin:webhooks_webhook_change", pk)

    def _resume(self, request: HttpRequest, webhook: Webhook) -> None:
        released = webhook_resume(webhook=webhook)
        self.message_user(
            request, f"{webhook.name} resumed: {released} held deliveries are being sent, in order"
        )

    @admin.action(description="Resume (send held deliveries in order)")
    def resume(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        if not self._licensed(request):
            return
        for webhook in queryset.filter(paused_at__isnull=False):
            self._resume(request, webhook)

    @admin.display(description="state")
    def state_shown(self, obj: Webhook) -> str:
        if obj.state == Webhook.State.PAUSED:
            return f"paused: {obj.paused_reason}"
        if obj.failing_since is not None and obj.state == Webhook.State.ACTIVE:
            since = f"{obj.failing_since:%Y-%m-%d %H:%M}"
            return f"failing since {since} UTC ({obj.consecutive_failures} failed)"
        return str(obj.state)

    @admin.display(description="scope", ordering="scope")
    def scope_short(self, obj: Webhook) -> str:
        return str(obj.scope)

    @admin.display(description="backlog")
    def backlog(self, obj: Webhook) -> str:
        pending = getattr(obj, "pending_count", 0)
        drain = backlog_drain_at(obj, pending)
        if drain is None:
            return str(pending)
        return f"{pending}, done ~{drain:%H:%M} UTC"

    @admin.display(description="destination")
    def destination(self, obj: Webhook) -> str:
        url = url_redacted(obj.url)
        return url if len(url) <= 60 else url[:57] + "…"

    @admin.display(description="signing secret")
    def signing(self, obj: Webhook) -> str:
        if not obj.secret:
            return "none (requests are not signed)"
        until = obj.previous_secret_until
        if obj.previous_secret and until is not None and until > timezone.now():
            # H-auth: rotation in progress
            return f"whsec_{MASK} (the replaced secret signs too until {until:%Y-%m-%d %H:%M} UTC)"
        return f"whsec_{MASK}"

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: Webhook) -> str:
        url = reverse("admin:webhooks_delivery_changelist") + f"?webhook__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """H-tmpl: `?preset=teams` starts the add form from that preset."""
        initial = super().get_changeform_initial_data(request)
        preset = _preset(request, None)
        if preset is not None:
            initial.pop("preset", None)
            initial.update(
                url=preset.url,
                method=preset.method,
                content_type=preset.content_type,
                body_template=preset.body_template,
                meta=preset.meta,
            )
        return initial

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Webhook, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        preset = _preset(request, obj if obj.pk else None)
        if preset is not None and isinstance(inline, HeaderInline) and request.method == "GET":
            kwargs["initial"] = [{"name": name, "value": value} for name, value in preset.headers]
        return kwargs

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> Any:
        preset = _preset(request, None)
        if preset is not None and request.method == "GET":
            fill = ", ".join(preset.auth.fill)
            self.message_user(
                request,
                f"Preset {preset.name}: {preset.description}"
                + (f" Authentication: {preset.auth.type} ({fill})." if fill else ""),
            )
        return super().add_view(request, form_url, extra_context)

    def save_model(
        self, request: HttpRequest, obj: Webhook, form: forms.Form, change: bool
    ) -> None:
        """Nothing yet: save_related writes the webhook with its rows, through the service."""

    def save_related(
        self, request: HttpRequest, form: WebhookForm, formsets: list[Any], change: bool
    ) -> None:
        obj = form.instance
        stored = Webhook.objects.get(pk=obj.pk) if change else None
        drop_held = form.cleaned_data.get("held_on_enable") == "drop"
        saved, generated = webhook_save(webhook=stored, **form.definition, drop_held=drop_held)
        obj.pk = saved.pk
        obj.refresh_from_db()
        for formset in formsets:
            # Read by the change message; the service rewrote the rows, not the formsets.
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if generated:
            messages.warning(
                request, f"New signing secret for {obj.name} (shown once): {generated}"
            )

    def _licensed(self, request: HttpRequest) -> bool:
        problem = webhooks_license_problem()
        if problem:
            self.message_user(request, problem, messages.ERROR)
        return problem is None

    @admin.action(description="Send a test event")
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        if not self._licensed(request):
            return
        for webhook in queryset:
            try:
                attempt = webhook_test_send(webhook=webhook)
            except TemplateFailed as exc:
                self.message_user(request, f"{webhook.name}: not sent: {exc}", messages.ERROR)
                continue
            if attempt is None:
                self.message_user(request, f"{webhook.name}: not sent", messages.ERROR)
            elif attempt.status_code and 200 <= attempt.status_code < 300:
                self.message_user(
                    request,
                    f"{webhook.name}: HTTP {attempt.status_code} in {attempt.latency_ms:.0f} ms"
                    + _response_shown(attempt),
                )
            else:
                self.message_user(
                    request,
                    f"{webhook.name}: {text_redacted(attempt.error) or attempt.status_code}"
                    + _response_shown(attempt),
                    messages.ERROR,
                )

    @admin.action(description="Enable")
    def enable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        if not self._licensed(request):
            return
        for webhook in queryset:
            problem = enable_problem(webhook)
            if problem:
                self.message_user(request, problem, messages.ERROR)
                return
            webhook_set_enabled(webhook=webhook, enabled=True)

    @admin.action(description="Enable, dropping held deliveries (skipped)")
    def enable_dropping_held(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        if not self._licensed(request):
            return
        for webhook in queryset:
            problem = enable_problem(webhook)
            if problem:
                self.message_user(request, problem, messages.ERROR)
                return
            webhook_set_enabled(webhook=webhook, enabled=True, drop_held=True)

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for webhook in queryset:
            webhook_set_enabled(webhook=webhook, enabled=False)


def _response_shown(attempt: DeliveryAttempt) -> str:
    """The receiver's answer, shortened for a message line (the attempt log has 4 KB)."""
    text = " ".join(attempt.response_body.split())
    if not text:
        return ""
    return " — response: " + (text if len(text) <= 300 else text[:299] + "…")


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = [
        "number", "trigger", "started_at", "destination", "status_code", "latency_ms",
        "error_class", "error_shown", "request_headers", "response_body",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="url")
    def destination(self, obj: DeliveryAttempt) -> str:
        return url_redacted(obj.url)

    @admin.display(description="error")
    def error_shown(self, obj: DeliveryAttempt) -> str:
        return text_redacted(obj.error)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    inlines = [AttemptInline]
    list_display = [
        "event_id", "webhook", "kind", "status", "attempt_count", "last_status_code",
        "short_error", "cdr_link", "created_at", "next_attempt_at",
    ]  # fmt: skip
    list_filter = ["status", "kind", "webhook", "created_at"]
    list_select_related = ["webhook"]
    search_fields = ["event_id", "cdr__pkid", "webhook__name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "webhook", "cdr_link", "kind", "event_id", "status", "reason", "attempt_count",
        "next_attempt_at", "last_status_code", "last_error_shown", "created_at", "finished_at",
        "body_shown",
    ]  # fmt: skip
    exclude = ["cdr", "call", "claimed_until", "schedule_start", "last_error"]
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="error")
    def short_error(self, obj: Delivery) -> str:
        text = text_redacted(obj.last_error or obj.reason)
        return text if len(text) <= 60 else text[:57] + "…"

    @admin.display(description="last error")
    def last_error_shown(self, obj: Delivery) -> str:
        return text_redacted(obj.last_error)

    @admin.display(description="body")
    def body_shown(self, obj: Delivery) -> str:
        """The body as sent; before the first send, a preview, labelled as such."""
        if obj.body:
            return obj.body
        preview = delivery_body_preview(obj)
        if preview is None:
            return "—"
        return format_html(
            '<strong class="body-preview">Not sent yet — preview rendered from the record '
            "with the webhook's current name and meta; the body is fixed at the first send."
            "</strong><br>{}",
            preview,
        )

    @admin.display(description="CDR / call")
    def cdr_link(self, obj: Delivery) -> str:
        """What the delivery is about: a record (record scope) or a call (call scope)."""
        if obj.call_id is not None:
            try:
                url = reverse("admin:cdr_call_change", args=[obj.call_id])
            except NoReverseMatch:  # no admin page for calls on this install
                return f"call {obj.call_id}"
            return format_html('<a href="{}">call {}</a>', url, obj.call_id)
        if obj.cdr_id is None:
            if obj.kind != Delivery.Kind.TEST:
                return "—"
            scope_call = obj.webhook.scope == Webhook.Scope.CALL
            return "synthetic test call" if scope_call else "synthetic test record"
        url = reverse("admin:cdr_cdr_change", args=[obj.cdr_id])
        return format_html('<a href="{}">CDR {}</a>', url, obj.cdr_id)

    @admin.action(description="Redeliver")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        problem = webhooks_license_problem()
        if problem:
            self.message_user(request, problem, messages.ERROR)
            return
        count = 0
        for delivery in queryset.exclude(status=Delivery.Status.SENDING):
            delivery_redeliver(delivery=delivery)
            count += 1
        self.message_user(request, f"{count} deliveries queued again")
