"""Test overrides: fast password hashing; everything else as in production."""

from calltelemetry.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
