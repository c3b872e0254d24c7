from __future__ import annotations

from typing import Any

from django import template

from licensing.selectors import license_get
from licensing.verification import State

register = template.Library()

_LEVEL = {State.EXPIRING: "warning", State.GRACE: "warning", State.EXPIRED: "error"}


@register.inclusion_tag("licensing/banner.html", takes_context=True)
def license_banner(context: template.Context) -> dict[str, Any]:
    """A warning on admin pages while the license is expiring, in grace or expired."""
    request = context.get("request")
    user = getattr(request, "user", None)
    # The login page extends the same template; license details are for staff only.
    if user is None or not user.is_staff:
        return {"info": None}
    info = license_get()
    return {"info": info if info.state in _LEVEL else None, "level": _LEVEL.get(info.state)}
