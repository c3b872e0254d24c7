"""Read-only admin pages for ingest records, CDRs and CMRs.

Records are evidence: nobody adds, edits or deletes them here. The pages decode what the
raw fields hide (epoch times, little-endian IPv4 integers, cause codes, varVQMetrics) and
show every field by its CUCM header name.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from cdr.models import Cdr, CdrFile, Cmr

# Keys CUCM uses for the listening MOS, by firmware generation.
MOS_KEYS = ("MLQKav", "MLQK")


def _table(rows: list[tuple[str, str]], empty: str = "—") -> str:
    if not rows:
        return empty
    body = format_html_join(
        "", "<tr><th>{}</th><td><code>{}</code></td></tr>", ((k, v) for k, v in rows)
    )
    return format_html('<table class="cdr-fields">{}</table>', body)


def _flat(fields: list[str | tuple[str, ...]]) -> list[str]:
    return [name for item in fields for name in (item if isinstance(item, tuple) else (item,))]


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only pages: the change form renders every field read-only."""

    list_per_page = 50
    show_full_result_count = False  # a COUNT(*) over millions of rows per page view is slow

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(CdrFile)
class CdrFileAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "kind",
        "status",
        "cluster",
        "stored_count",
        "duplicate_count",
        "rejected_count",
        "created_at",
    ]
    list_filter = ["status", "kind", "source", "cluster"]
    search_fields = ["name", "sha256", "cluster"]
    date_hierarchy = "created_at"
    fields = [
        "name",
        "kind",
        "status",
        "source",
        "cluster",
        "sha256",
        "size",
        ("stored_count", "duplicate_count", "rejected_count"),
        "error",
        "row_errors",
        ("created_at", "started_at", "finished_at"),
        "attempts",
        "path",
    ]
    readonly_fields = _flat(fields)

    @admin.display(description="Rejected rows")
    def row_errors(self, obj: CdrFile) -> str:
        rows = [(f"line {e.get('line')}", e.get("reason", "")) for e in obj.errors or []]
        return _table(rows, empty="none")


class AnsweredFilter(admin.SimpleListFilter):
    title = "answered"
    parameter_name = "answered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Answered"), ("no", "Never connected")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Cdr]) -> QuerySet[Cdr]:
        if self.value() == "yes":
            return queryset.filter(connect_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(connect_at__isnull=True)
        return queryset


class RecordAdmin(ReadOnlyAdmin):
    # Decoded values (IPs, MOS) read fields through the record's header layout.
    list_select_related = ["layout"]

    @admin.display(description="All fields by header name")
    def all_fields(self, obj: Cdr | Cmr) -> str:
        return _table(list(obj.fields.items()))


@admin.register(Cdr)
class CdrAdmin(RecordAdmin):
    list_display = [
        "origination_at",
        "calling_party_number",
        "original_called_party_number",
        "final_called_party_number",
        "duration",
        "answered_flag",
        "orig_device_name",
        "dest_device_name",
        "orig_cause",
        "dest_cause",
    ]
    list_filter = ["cluster", AnsweredFilter, "dest_cause_value"]
    search_fields = [
        "=calling_party_number",
        "=original_called_party_number",
        "=final_called_party_number",
        "=last_redirect_dn",
        "=orig_device_name",
        "=dest_device_name",
        "=call_id",
        "=pkid",
    ]
    date_hierarchy = "origination_at"
    fields = [
        ("cluster", "pkid", "file", "line"),
        ("call_manager_id", "call_id", "orig_leg_id", "dest_leg_id"),
        ("origination_at", "connect_at", "disconnect_at", "duration"),
        ("calling_party_number", "original_called_party_number"),
        ("final_called_party_number", "last_redirect_dn"),
        ("orig_device_name", "orig_ip"),
        ("dest_device_name", "dest_ip"),
        ("orig_cause_value", "orig_cause"),
        ("dest_cause_value", "dest_cause"),
        "all_fields",
    ]
    readonly_fields = _flat(fields)

    @admin.display(description="answered", boolean=True, ordering="connect_at")
    def answered_flag(self, obj: Cdr) -> bool:
        return obj.answered

    @admin.display(description="orig cause", ordering="orig_cause_value")
    def orig_cause(self, obj: Cdr) -> str:
        return obj.orig_cause_text

    @admin.display(description="dest cause", ordering="dest_cause_value")
    def dest_cause(self, obj: Cdr) -> str:
        return obj.dest_cause_text

    @admin.display(description="orig IP")
    def orig_ip(self, obj: Cdr) -> str:
        return obj.orig_ip or "—"

    @admin.display(description="dest IP")
    def dest_ip(self, obj: Cdr) -> str:
        return obj.dest_ip or "—"


@admin.register(Cmr)
class CmrAdmin(RecordAdmin):
    list_display = [
        "stamp_at",
        "directory_num",
        "device_name",
        "duration",
        "jitter",
        "latency",
        "packets_lost",
        "mos",
    ]
    list_filter = ["cluster"]
    search_fields = ["=directory_num", "=device_name", "=call_id", "=call_identifier", "=pkid"]
    date_hierarchy = "stamp_at"
    fields = [
        ("cluster", "pkid", "file", "line"),
        ("call_manager_id", "call_id", "node_id", "call_identifier"),
        ("stamp_at", "duration"),
        ("directory_num", "device_name"),
        ("jitter", "latency", "packets_lost", "mos"),
        "metrics",
        "all_fields",
    ]
    readonly_fields = _flat(fields)

    @admin.display(description="MOS")
    def mos(self, obj: Cmr) -> str:
        metrics = obj.vq_metrics
        return next((metrics[k] for k in MOS_KEYS if k in metrics), "—")

    @admin.display(description="Voice-quality metrics")
    def metrics(self, obj: Cmr) -> str:
        return _table(list(obj.vq_metrics.items()), empty="none")
