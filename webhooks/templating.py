"""Body templates: a webhook's `body_template`, rendered with Jinja2 in a sandbox.

An empty template sends the seed body (`webhooks.payload`), byte for byte. A template sees:
`cdr` (the seed body's `cdr` object: fields as text), `decoded` (cause texts, dotted IPs,
ISO times, `answered`), for call scope `call`, `cdrs`, `cmrs` (the call payload's objects,
`cdr` is then the first leg), and `meta`, `name`, `event_id`.

The sandbox keeps a template from reaching Python internals; the limits below keep one from
holding a worker: output size, loop iterations and render time, each failing the render with
a `TemplateFailed` whose text says which limit was hit.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from calltelemetry.caching import BoundedCache
from cdr.codes import cause_text
from cdr.parsing import int_to_ipv4

OUTPUT_LIMIT = 256 * 1024  # characters of rendered body
LOOP_LIMIT = 10_000  # iterations of all loops of one render together
RENDER_SECONDS = 1.0
SOURCE_LIMIT = 64 * 1024  # characters of template
INTEGER_BITS = 100_000


class TemplateFailed(Exception):
    """A template that does not compile, fails while rendering, or hits a limit."""


@dataclass(slots=True)
class _Budget:
    deadline: float
    loops: int = 0

    def step(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateFailed(f"rendering took longer than {RENDER_SECONDS:g} s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    if budget is None:  # only template_render runs templates
        raise TemplateFailed("a template runs only inside template_render")
    return budget


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wrapped around every `for` loop's iterable at compile time: counts the iterations of
    the whole render against LOOP_LIMIT and checks the deadline at each one."""
    budget = _current()
    for item in iterable:
        budget.loops += 1
        if budget.loops > LOOP_LIMIT:
            raise TemplateFailed(f"loops ran more than {LOOP_LIMIT} iterations")
        budget.step()
        yield item


def _sized(value: Any) -> Any:
    if isinstance(value, str) and len(value) > OUTPUT_LIMIT:
        raise TemplateFailed(f"a value grew past {OUTPUT_LIMIT} characters")
    return value


def _no_huge_numbers(args: Iterable[Any]) -> None:
    # `"x" * 10**9`, `"x".ljust(10**9)`, `"x"|center(10**9)`: refused before they allocate.
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > OUTPUT_LIMIT:
            raise TemplateFailed(f"a number over {OUTPUT_LIMIT} given where it sizes output")


def _tojson(value: Any, indent: int | None = None) -> str:
    """Valid JSON for any value (not HTML-escaped like Jinja's own `tojson`: bodies are not
    HTML); non-ASCII stays as it is, as in the seed body."""
    _no_huge_numbers([indent])
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _json_default(value: Any) -> Any:
    # Undefined: a field this record left empty (absent from `cdr`), or a typo: null.
    return None if isinstance(value, Undefined) else str(value)


def _guarded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value comes first, after the context or environment when it asks for one.
    skip = 2 if hasattr(function, "jinja_pass_arg") else 1

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _no_huge_numbers([*args[skip:], *kwargs.values()])
        _current().step()
        return _sized(function(*args, **kwargs))

    guarded.__dict__.update(getattr(function, "__dict__", {}))  # keeps pass_context & co.
    return guarded


class _Environment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_loop_guard", [], [], None, None)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # Integers that would take long to compute or hold (10 ** 10 ** 10, squaring a huge
        # number again and again) are refused from their size in bits, before the work.
        if isinstance(left, int) and isinstance(right, int):
            bits = (
                left.bit_length() * abs(right)
                if operator == "**"
                else (left.bit_length() + right.bit_length())
            )
            if bits > INTEGER_BITS:
                raise TemplateFailed(f"a number over {INTEGER_BITS} bits")
        if operator == "**":
            return left**right
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                if len(sequence) * count > OUTPUT_LIMIT:
                    raise TemplateFailed(f"a value would grow past {OUTPUT_LIMIT} characters")
        return left * right

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _no_huge_numbers([*args, *kwargs.values()])
        _current().step()
        return _sized(super().call(__context, __obj, *args, **kwargs))


def _environment() -> _Environment:
    env = _Environment(autoescape=False, keep_trailing_newline=True)
    env.filters = {name: _guarded_filter(f) for name, f in env.filters.items()}
    env.filters["tojson"] = _guarded_filter(_tojson)
    env.filters["_loop_guard"] = _loop_guard
    return env


ENVIRONMENT = _environment()
_compiled: BoundedCache[str, Any] = BoundedCache(max_entries=256)


def template_compile(source: str) -> Any:
    """The compiled template (cached per process: workers render one template many times)."""
    if len(source) > SOURCE_LIMIT:
        raise TemplateFailed(f"a template is at most {SOURCE_LIMIT} characters")
    template = _compiled.get(source)
    if template is None:
        try:
            template = ENVIRONMENT.from_string(source)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            raise TemplateFailed(f"{exc}" + (f" (line {line})" if line else "")) from exc
        _compiled.set(source, template)
    return template


def template_render(source: str, variables: dict[str, Any]) -> str:
    """Render within the limits; raises TemplateFailed with a readable reason."""
    template = template_compile(source)
    budget = _Budget(deadline=time.monotonic() + RENDER_SECONDS)
    token = _budget.set(budget)
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(variables):
            size += len(chunk)
            if size > OUTPUT_LIMIT:
                raise TemplateFailed(f"the body grew past {OUTPUT_LIMIT} characters")
            budget.step()
            parts.append(chunk)
    except TemplateFailed:
        raise
    except RecursionError as exc:
        raise TemplateFailed("recursion too deep") from exc
    except Exception as exc:  # whatever the template did wrong, it is the template's error
        raise TemplateFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        _budget.reset(token)
    return "".join(parts)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# --- variables -------------------------------------------------------------------------

IP_FIELDS = (("origIp", "origIpv4v6Addr", "origIpAddr"), ("destIp", "destIpv4v6Addr", "destIpAddr"))
TIMES = ("dateTimeOrigination", "dateTimeConnect", "dateTimeDisconnect")


def _cause(value: Any) -> str:
    try:
        return cause_text(int(value))
    except (TypeError, ValueError):
        return ""


def decoded_record(cdr: dict[str, Any]) -> dict[str, Any]:
    """What a template would otherwise have to decode from a CDR's text: cause texts (the
    ending cause: the called side's when it gave one, else the calling side's), dotted IPs
    (the text field when CUCM wrote one, else the little-endian integer), times as ISO 8601
    UTC or None for never, and whether it was answered."""
    decoded: dict[str, Any] = {
        "origCause": _cause(cdr.get("origCause_value")),
        "destCause": _cause(cdr.get("destCause_value")),
    }
    dest = cdr.get("destCause_value", "0")
    decoded["cause"] = decoded["destCause"] if dest not in ("", "0") else decoded["origCause"]
    for key, text_field, int_field in IP_FIELDS:
        try:
            decoded[key] = cdr.get(text_field) or int_to_ipv4(cdr.get(int_field))
        except ValueError:
            decoded[key] = None
    for name in TIMES:
        value = cdr.get(name, "Never")
        decoded[name] = None if value == "Never" else value
    decoded["answered"] = decoded["dateTimeConnect"] is not None
    return decoded


def record_variables(
    *, cdr: dict[str, Any], name: str, meta: dict[str, Any], event_id: str
) -> dict[str, Any]:
    return {
        "cdr": cdr,
        "decoded": decoded_record(cdr),
        "meta": meta,
        "name": name,
        "event_id": event_id,
    }


def call_variables(
    *,
    call: dict[str, Any],
    cdrs: list[dict[str, Any]],
    cmrs: list[dict[str, str]],
    name: str,
    meta: dict[str, Any],
    event_id: str,
) -> dict[str, Any]:
    """A call's variables: `cdr` and `decoded` describe its first leg, except that the
    call's own facts decide `answered`, `cause` and the times (start and end)."""
    first = cdrs[0] if cdrs else {}
    decoded = decoded_record(first)
    decoded["answered"] = bool(call.get("answered"))
    decoded["cause"] = _cause(call.get("cause"))
    decoded["started"] = call.get("started")
    decoded["ended"] = call.get("ended")
    return {
        "cdr": first,
        "decoded": decoded,
        "call": call,
        "cdrs": cdrs,
        "cmrs": cmrs,
        "meta": meta,
        "name": name,
        "event_id": event_id,
    }
