"""Read-only admin pages for ingest records, CDRs, CMRs and calls.

Records are evidence: nobody adds, edits or deletes them here. The pages decode what the
raw fields hide (epoch times, little-endian IPv4 integers, cause codes, varVQMetrics) and
show every field by its CUCM header name. A call's page lists its legs and CMRs, and each
record's page links back to its call.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from cdr.filters import call_number_q
from cdr.models import Call, Cdr, CdrFile, Cmr


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


def _call_link(record: Cdr | Cmr) -> str:
    call = record.call_ref
    if call is None:
        return "—"
    # A call merged into another lives on as that one.
    target = call.merged_into_id or call.pk
    return format_html(
        '<a href="{}">call {}</a>', reverse("admin:cdr_call_change", args=[target]), target
    )


class RecordAdmin(ReadOnlyAdmin):
    # Decoded values (IPs, MOS) read fields through the record's header layout; the call
    # column its call.
    list_select_related = ["layout", "call_ref"]

    @admin.display(description="All fields by header name")
    def all_fields(self, obj: Cdr | Cmr) -> str:
        return _table(list(obj.fields.items()))

    @admin.display(description="call")
    def call(self, obj: Cdr | Cmr) -> str:
        return _call_link(obj)


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
        "call",
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
        ("call", "call_manager_id", "call_id", "orig_leg_id", "dest_leg_id"),
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
        "mos_metric",
        "call",
    ]
    list_filter = ["cluster"]
    search_fields = ["=directory_num", "=device_name", "=call_id", "=call_identifier", "=pkid"]
    date_hierarchy = "stamp_at"
    fields = [
        ("cluster", "pkid", "file", "line"),
        ("call", "call_manager_id", "call_id", "node_id", "call_identifier"),
        ("stamp_at", "duration"),
        ("directory_num", "device_name"),
        ("jitter", "latency", "packets_lost", "mos_metric"),
        "metrics",
        "all_fields",
    ]
    readonly_fields = _flat(fields)

    # Not named `mos`: the admin shows a model field of that name before a method. The
    # stored `mos` is what call facts read (MLQKmn, else MLQKav, else MLQK).
    @admin.display(description="MOS", ordering="mos")
    def mos_metric(self, obj: Cmr) -> str:
        return f"{obj.mos:.2f}" if obj.mos is not None else "—"

    @admin.display(description="Voice-quality metrics")
    def metrics(self, obj: Cmr) -> str:
        return _table(list(obj.vq_metrics.items()), empty="none")


class SettledFilter(admin.SimpleListFilter):
    title = "settled"
    parameter_name = "settled"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("yes", "Settled"), ("no", "Open")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        if self.value() == "yes":
            return queryset.filter(settled_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(settled_at__isnull=True)
        return queryset


# (field, short label, what it means): short, so the list fits a 1366 px screen.
CALL_FLAGS = (
    ("answered", "ans", "answered"),
    ("missed", "missed", "missed"),
    ("voicemail", "vm", "reached voicemail"),
    ("transferred", "xfer", "transferred"),
    ("forwarded", "fwd", "forwarded"),
    ("conference", "conf", "conference"),
)


def _link(url_name: str, pk: int, text: object) -> str:
    return format_html('<a href="{}">{}</a>', reverse(url_name, args=[pk]), text)


def _rows_table(
    head: tuple[str, ...], rows: list[tuple[Any, ...]], *, wrap: tuple[int, ...] = ()
) -> str:
    """A table of records; every column stays on one line but those in `wrap` (calls.css)."""
    if not rows:
        return "none"
    header = format_html_join("", "<th>{}</th>", ((h,) for h in head))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        (
            (
                format_html_join(
                    "",
                    '<td class="{}">{}</td>',
                    (
                        ("" if i in wrap else "nowrap", "—" if v is None else v)
                        for i, v in enumerate(row)
                    ),
                ),
            )
            for row in rows
        ),
    )
    return format_html(
        '<table class="cdr-fields call-records"><thead><tr>{}</tr></thead>'
        "<tbody>{}</tbody></table>",
        header,
        body,
    )


def _time(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return timezone.localtime(value).strftime(fmt) if value else "—"


def _leg_numbers(leg: Cdr) -> list[str]:
    numbers = [leg.calling_party_number or "?", leg.original_called_party_number or "?"]
    if leg.final_called_party_number and leg.final_called_party_number != numbers[1]:
        numbers.append(leg.final_called_party_number)
    return numbers


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    # Compact columns (calls.css keeps them on one line): the list fits a 1366 px screen
    # beside the admin's navigation and filters.
    list_display = [
        "started",
        "parties",
        "answered_by",
        "legs",
        "duration",
        "flags",
        "mos",
        "settled",
    ]
    list_filter = ["answered", "missed", "voicemail", SettledFilter, "cluster"]
    search_fields = ["=caller", "=dialed", "=answered_by"]
    search_help_text = "A number: caller, dialed, answered by, or any leg's number (exact)."
    date_hierarchy = "started_at"
    fields = [
        ("cluster", "call_manager_id", "call_id"),
        ("started_at", "ended_at", "duration", "ring_seconds"),
        ("caller", "dialed", "answered_by"),
        "flag_names",
        ("cause", "cause_text"),
        ("mos_min", "jitter_max", "loss_pct"),
        ("legs", "cmr_count"),
        ("first_arrival_at", "last_arrival_at", "settled_at", "settle_count"),
        "leg_table",
        "cmr_table",
    ]
    readonly_fields = _flat(fields)

    class Media:
        css = {"all": ["cdr/calls.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        # A call merged into another is shown as part of that one.
        return super().get_queryset(request).filter(merged_into__isnull=True)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Call], search_term: str
    ) -> tuple[QuerySet[Call], bool]:
        # A number anywhere in the call, including the legs (the API's `number` filter).
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(call_number_q(term)), False

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Call) -> str:
        return _time(obj.started_at, "%Y-%m-%d %H:%M")

    @admin.display(description="caller → dialed")
    def parties(self, obj: Call) -> str:
        return f"{obj.caller or '?'} → {obj.dialed or '?'}"

    @admin.display(description="flags")
    def flags(self, obj: Call) -> str:
        shown = [(meaning, label) for field, label, meaning in CALL_FLAGS if getattr(obj, field)]
        if not shown:
            return "—"
        return format_html_join(" ", '<abbr title="{}">{}</abbr>', shown)

    @admin.display(description="MOS", ordering="mos_min")
    def mos(self, obj: Call) -> str:
        return "—" if obj.mos_min is None else f"{obj.mos_min:.2f}"

    @admin.display(description="flags")
    def flag_names(self, obj: Call) -> str:
        return ", ".join(meaning for field, _, meaning in CALL_FLAGS if getattr(obj, field)) or "—"

    @admin.display(description="settled", boolean=True, ordering="settled_at")
    def settled(self, obj: Call) -> bool:
        return obj.settled_at is not None

    @admin.display(description="cause text")
    def cause_text(self, obj: Call) -> str:
        return obj.cause_text or "—"

    @admin.display(description="Legs (CDRs), in origination order")
    def leg_table(self, obj: Call) -> str:
        legs = obj.cdr_set.order_by("origination_at", "id")
        rows = [
            (
                _link("admin:cdr_cdr_change", leg.pk, f"CDR {leg.pk}"),
                _time(leg.origination_at),
                _time(leg.connect_at, "%H:%M:%S"),
                leg.duration,
                " → ".join(_leg_numbers(leg)),
                f"{leg.orig_device_name or '—'} → {leg.dest_device_name or '—'}",
                leg.dest_cause_text or leg.orig_cause_text or "—",
            )
            for leg in legs
        ]
        head = (
            "CDR",
            "originated",
            "connected",
            "seconds",
            "calling → called (→ final)",
            "devices",
            "cause",
        )
        # Device names and cause texts are long: they wrap, the rest stays on one line.
        return _rows_table(head, rows, wrap=(5, 6))

    @admin.display(description="CMRs")
    def cmr_table(self, obj: Call) -> str:
        cmrs = obj.cmr_set.order_by("stamp_at", "id")
        rows = [
            (
                _link("admin:cdr_cmr_change", cmr.pk, f"CMR {cmr.pk}"),
                _time(cmr.stamp_at),
                cmr.directory_num or "—",
                cmr.device_name or "—",
                cmr.jitter,
                cmr.latency,
                cmr.packets_lost,
                cmr.mos,
            )
            for cmr in cmrs
        ]
        head = ("CMR", "stamped", "number", "device", "jitter", "latency", "lost", "MOS")
        return _rows_table(head, rows)
