"""Reading and validating the appliance's environment settings.

Every setting the product documents is parsed here, and a bad value stops start-up with a
message that names the variable, so an operator never has to guess which line of `.env`
is wrong.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import environ
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class SettingError(ImproperlyConfigured):
    def __init__(self, name: str, value: object, reason: str) -> None:
        super().__init__(f"Invalid setting {name}={value!r}: {reason}")
        self.name = name


def read(env: environ.Env, name: str, default: str, parse: Callable[[str], T]) -> T:
    raw = env.str(name, default=default)
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        raise SettingError(name, raw, str(exc)) from exc


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number greater than 0")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be 0 or a positive number")
    return value


def port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")
    return value


def retry_schedule(raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ValueError("must list at least one delay in seconds, e.g. 5,300,1800")
    values = tuple(float(p) for p in parts)
    if any(v < 0 for v in values):
        raise ValueError("delays must not be negative")
    return values


def networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def public_keys(raw: str) -> dict[str, str] | None:
    if not raw.strip():
        return None
    value = json.loads(raw)
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a JSON object mapping key id to base64 Ed25519 public key")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("key ids and keys must be strings")
    return value


def directory(raw: str) -> Path:
    if not raw:
        raise ValueError("must not be empty")
    return Path(raw).expanduser().resolve()
