"""Destinations as people may see them: credentials in a URL are masked wherever it is shown.

Receivers often carry their credentials in the URL itself — `https://user:pass@crm/` or
`…?api_key=…&token=…` — so the stored URL is a secret like a header value. Everything that
shows a URL (API, admin, attempt log, error texts) shows `url_redacted(url)`, and only staff
see destinations at all. An edit that sends the redacted URL back unchanged keeps the stored
one, as a masked header value does.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

MASK = "••••••"

# Query parameter names that carry credentials, by the words they contain.
_SECRET_WORDS = re.compile(
    r"(key|token|secret|pass|pwd|auth|sig|credential|session|code|hash|apikey|access)",
    re.IGNORECASE,
)
# In free text (an error message): userinfo of a URL, and `name=value` of a secret name.
_TEXT_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_TEXT_PARAM = re.compile(
    r"(?P<name>[\w.-]*(?:" + _SECRET_WORDS.pattern[1:-1] + r")[\w.-]*)=[^&\s'\"]+", re.IGNORECASE
)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_WORDS.search(name))


def url_redacted(url: str) -> str:
    """`url` with its userinfo and the values of secret-looking query parameters masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text_redacted(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(name) for name, _ in pairs):
            query = "&".join(
                f"{quote(name, safe='')}={MASK if _secret_name(name) else quote(value, safe='')}"
                for name, value in pairs
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def text_redacted(text: str) -> str:
    """Free text (an error message, a log line) with URL credentials masked."""
    if "@" not in text and "=" not in text:
        return text
    text = _TEXT_USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)
    return _TEXT_PARAM.sub(lambda m: f"{m['name']}={MASK}", text)


class MaskedUrl(ValueError):
    """An edit sent a URL that still holds the mask but is not the stored URL's redacted form."""


def url_restored(given: str, *, stored: str | None) -> str:
    """The URL to save when an edit sends `given`: the stored URL when `given` is its redacted
    form sent back unchanged, else `given` itself. A changed URL must be sent in full."""
    if MASK not in given:
        return given
    if stored is not None and url_redacted(stored) == given:
        return stored
    raise MaskedUrl(
        f"the URL still contains {MASK}: send the whole URL with its credentials, or the "
        "masked URL unchanged to keep the stored one"
    )
