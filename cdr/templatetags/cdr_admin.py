"""Admin index pieces that only need the records: the zero-duration warning."""

from __future__ import annotations

from typing import Any

from django import template

from cdr.zero_duration import zero_duration_warnings

register = template.Library()


@register.inclusion_tag("admin/zero_duration_warning.html")
def zero_duration_warning() -> dict[str, Any]:
    return {"warnings": zero_duration_warnings()}
