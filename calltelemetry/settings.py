"""Django settings for the Call Telemetry appliance.

All configuration comes from the environment (and `.env` when present), parsed and checked
in one place. Defaults give the embedded appliance: SQLite and a file-system Celery broker
under DATA_DIR, so `make run` needs no PostgreSQL or Redis.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from calltelemetry import config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DATA_DIR: Path = config.read(env, "DATA_DIR", str(BASE_DIR / "var"), config.directory)
DATA_DIR.mkdir(parents=True, exist_ok=True)

PORT: int = config.read(env, "PORT", "8000", config.port)
DEBUG = env.bool("DEBUG", default=False)


def _environment(raw: str) -> str:
    if raw not in ("production", "development"):
        raise ValueError("use production or development")
    return raw


# docker-compose.yml sets production: there a generated key or a default host list would
# hide a missing line in .env, so both must be given. `make run` stays zero-configuration.
DJANGO_ENV: str = config.read(env, "DJANGO_ENV", "development", _environment)
PRODUCTION = DJANGO_ENV == "production"


def _required(name: str) -> str:
    value = env.str(name, default="").strip()
    if not value:
        raise config.SettingError(name, value, "required when DJANGO_ENV=production")
    return value


def _secret_key() -> str:
    if PRODUCTION:
        return _required("SECRET_KEY")
    key = env.str("SECRET_KEY", default="")
    if key:
        return key
    # Embedded mode: one random key per installation, kept beside the data it protects.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Previous keys, still accepted (sessions, and webhook secrets encrypted at rest until
# `manage.py reencrypt_secrets` rewrites them with SECRET_KEY).
SECRET_KEY_FALLBACKS: list[str] = env.list("SECRET_KEY_FALLBACKS", default=[])
if PRODUCTION:
    _required("ALLOWED_HOSTS")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

# HTTPS=true: the appliance sits behind a TLS-terminating proxy that sets X-Forwarded-Proto.
# Cookies then travel only over TLS and browsers are told to use nothing else (HSTS).


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", ""):
        raise ValueError("use true or false")
    return value in ("true", "1", "yes")


HTTPS: bool = config.read(env, "HTTPS", "false", _flag)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # The compose health check and a Prometheus scraper call the container directly, in HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS: int = config.read(env, "HSTS_SECONDS", "31536000", config.non_negative_int)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading puts the host in browsers' built-in HSTS lists: a public-website decision an
# appliance on a private name cannot make, so check --deploy's reminder is not ours.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "licensing",  # first, so its admin/base_site.html (license banner) wins
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "cdr",
    "webhooks",
    "sftp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "calltelemetry.urls"
WSGI_APPLICATION = "calltelemetry.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


_DB_ENGINES = {"django.db.backends.sqlite3", "django.db.backends.postgresql"}


def _database() -> dict:
    default = f"sqlite:///{DATA_DIR / 'db.sqlite3'}"
    try:
        db = env.db_url("DATABASE_URL", default=default)
    except Exception as exc:  # django-environ raises several types for a bad URL
        raise config.SettingError("DATABASE_URL", env.str("DATABASE_URL", ""), str(exc)) from exc
    if db.get("ENGINE") not in _DB_ENGINES:
        raise config.SettingError(
            "DATABASE_URL", env.str("DATABASE_URL", ""), "use postgres://… or sqlite:///…"
        )
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # Web, worker, beat and watcher share one file: WAL lets readers run beside the
        # writer, IMMEDIATE transactions queue writers instead of failing with "locked".
        db["OPTIONS"] = {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        db["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
    else:
        db.setdefault("CONN_MAX_AGE", 60)
        db["CONN_HEALTH_CHECKS"] = True
    return db


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Ingest ---------------------------------------------------------------------------
CDR_INCOMING_DIR: Path = config.read(
    env, "CDR_INCOMING_DIR", str(DATA_DIR / "incoming"), config.directory
)
# A file is claimed only once its size and mtime have not changed for this long.
CDR_SETTLE_SECONDS: float = config.read(env, "CDR_SETTLE_SECONDS", "2", config.positive_float)
CDR_WATCH_INTERVAL: float = config.read(env, "CDR_WATCH_INTERVAL", "1", config.positive_float)
# Seconds one file's ingest may run (a 1 GiB file takes a few minutes at the measured
# rates); past it the task is interrupted and retried later, up to 5 attempts.
CDR_INGEST_TIME_LIMIT: float = config.read(
    env, "CDR_INGEST_TIME_LIMIT", "1800", config.positive_float
)
# /healthz (and the `make run` supervisor) call the watcher stalled when it has not completed
# a scan with a database round trip for this long; 0: this deployment runs no watcher.
WATCHER_STALE_SECONDS: float = config.read(
    env, "WATCHER_STALE_SECONDS", "60", config.non_negative_float
)
# PostgreSQL batches go through COPY; SQLite's are bound parameters (at most 32,766).
_batch = "5000" if DATABASES["default"]["ENGINE"].endswith("postgresql") else "1000"
CDR_BATCH_SIZE: int = config.read(env, "CDR_BATCH_SIZE", _batch, config.non_negative_int) or 1000

# --- Calls (legs and CMRs joined into calls) ---------------------------------------------
# A call is settled (and its call-scope webhooks evaluated) once no leg and no CMR of it has
# arrived for this long, by the appliance's clock: CMR files come separately from CDR files.
CALL_SETTLE_SECONDS: float = config.read(env, "CALL_SETTLE_SECONDS", "120", config.positive_float)


def _numbers(raw: str) -> frozenset[str]:
    numbers = frozenset(n.strip() for n in raw.split(",") if n.strip())
    if any(len(n) > 50 or any(c.isspace() or not c.isprintable() for c in n) for n in numbers):
        raise ValueError("use directory numbers separated by commas, e.g. 8000,+14085550100")
    return numbers


# Voicemail pilot numbers: a call whose only connected legs reached one was not answered by a
# person (call.missed, call.voicemail).
VOICEMAIL_NUMBERS: frozenset[str] = config.read(env, "VOICEMAIL_NUMBERS", "", _numbers)

# --- Retention (days; 0 keeps forever) -------------------------------------------------
CDR_RETENTION_DAYS: int = config.read(env, "CDR_RETENTION_DAYS", "0", config.non_negative_int)
DELIVERY_LOG_RETENTION_DAYS: int = config.read(
    env, "DELIVERY_LOG_RETENTION_DAYS", "0", config.non_negative_int
)

# --- SFTP receiver (`manage.py run_sftp`) ------------------------------------------------


def _at_least_one(raw: str) -> int:
    value = config.non_negative_int(raw)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


SFTP_HOST: str = env.str("SFTP_HOST", default="0.0.0.0")
SFTP_PORT: int = config.read(env, "SFTP_PORT", "2222", config.port)
SFTP_MAX_FILE_BYTES: int = config.read(env, "SFTP_MAX_FILE_BYTES", str(1 << 30), _at_least_one)
SFTP_MAX_SESSIONS: int = config.read(env, "SFTP_MAX_SESSIONS", "16", _at_least_one)

# --- Ingest limits (bytes, uncompressed) ------------------------------------------------
# A real CUCM file is at most tens of MB and a record 1-3 KB: past the first limit the file
# fails with the rows before it stored; a longer line is rejected without being read whole.
CDR_MAX_FILE_BYTES: int = config.read(env, "CDR_MAX_FILE_BYTES", str(2 << 30), _at_least_one)
CDR_MAX_LINE_BYTES: int = config.read(env, "CDR_MAX_LINE_BYTES", str(64 << 10), _at_least_one)

# --- Webhooks ---------------------------------------------------------------------------
WEBHOOK_TIMEOUT: float = config.read(env, "WEBHOOK_TIMEOUT", "15", config.positive_float)
WEBHOOK_RETRY_SCHEDULE: tuple[float, ...] = config.read(
    env, "WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000", config.retry_schedule
)
WEBHOOK_ALLOWED_NETWORKS = config.read(env, "WEBHOOK_ALLOWED_NETWORKS", "", config.networks)
# H-auth: seconds a replaced signing secret keeps signing beside the new one.
WEBHOOK_SECRET_OVERLAP: int = config.read(
    env, "WEBHOOK_SECRET_OVERLAP", "86400", config.non_negative_int
)

# --- H-state: pausing a failing webhook, and its alert e-mail ---------------------------
WEBHOOK_PAUSE_AFTER: float = config.read(env, "WEBHOOK_PAUSE_AFTER", "86400", config.positive_float)


def _email(raw: str) -> dict[str, Any]:
    """django-environ's EMAIL_URL form (smtp://user:pass@host:587, smtp+tls://…); empty:
    mails are written to the console, where `make run` shows them."""
    try:
        parsed = environ.Env.email_url_config(raw.strip() or "consolemail://")
    except ImproperlyConfigured as exc:
        raise ValueError(f"{exc}: use smtp://, smtp+tls://, smtp+ssl:// or consolemail://") from exc
    # Unset parts keep Django's defaults (None is no host, port or user).
    return {key: value for key, value in parsed.items() if value is not None}


def _emails(raw: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in raw.split(",") if part.strip())
    for address in addresses:
        if "@" not in address or any(ch.isspace() for ch in address):
            raise ValueError(f"{address!r} is not an e-mail address")
    return addresses


vars().update(config.read(env, "EMAIL_URL", "", _email))
ALERT_EMAILS: tuple[str, ...] = config.read(env, "ALERT_EMAILS", "", _emails)
DEFAULT_FROM_EMAIL: str = env.str("DEFAULT_FROM_EMAIL", default="calltelemetry@localhost")

# --- Metrics (/metrics) ------------------------------------------------------------------


def _metrics_token(raw: str) -> str:
    token = raw.strip()
    if token and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ValueError("use at least 16 characters and no spaces, or leave it empty")
    return token


# Prometheus sends it as `Authorization: Bearer <token>` (its `authorization: credentials`).
METRICS_TOKEN: str = config.read(env, "METRICS_TOKEN", "", _metrics_token)
# Sources that may scrape without a token; requests forwarded by a proxy never count.
METRICS_ALLOWED_NETWORKS = config.read(
    env, "METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128", config.networks
)

# --- License ----------------------------------------------------------------------------
LICENSE_PUBLIC_KEYS: dict[str, str] | None = config.read(
    env, "LICENSE_PUBLIC_KEYS", "", config.public_keys
)

# --- Celery -----------------------------------------------------------------------------
_broker_dir = DATA_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
elif not CELERY_BROKER_URL.startswith(("redis://", "rediss://", "amqp://", "pyamqp://")):
    raise config.SettingError(
        "CELERY_BROKER_URL", CELERY_BROKER_URL, "use redis://, amqp:// or filesystem://"
    )
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker keeps reconnecting to a restarted broker for as long as it takes (Celery's default
# gives up after 100 attempts, about 50 minutes, and exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "cdr.tasks.*": {"queue": "ingest"},
    "webhooks.tasks.deliver_many": {"queue": "webhooks"},
}
CELERY_BEAT_SCHEDULE = {
    "webhooks-sweep": {"task": "webhooks.tasks.sweep", "schedule": 2.0},
    "cdr-sweep": {"task": "cdr.tasks.sweep_files", "schedule": 10.0},
    "calls-settle": {"task": "cdr.tasks.calls_settle", "schedule": 5.0},
    "retention-purge": {"task": "calltelemetry.tasks.retention_purge", "schedule": 3600.0},
}
CELERY_IMPORTS = ("calltelemetry.tasks",)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"

# --- API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["calltelemetry.permissions.ReadAuthenticatedWriteStaff"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Call Telemetry CDR Webhooks API",
    "DESCRIPTION": "Ingest Cisco UCM CDR/CMR files and deliver matching records to webhooks.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "webhooks.models.Delivery.Status",
        "DeliveryKindEnum": "webhooks.models.Delivery.Kind",
        "CdrFileStatusEnum": "cdr.models.CdrFile.Status",
        "CdrFileKindEnum": "cdr.models.CdrFile.Kind",
        "LicenseStateEnum": ["community", "active", "expiring", "grace", "expired"],
        "ConditionOperatorEnum": "webhooks.models.Condition.Operator",
        "WebhookStateEnum": "webhooks.models.Webhook.State",  # H-state
    },
}


def _log_format(raw: str) -> str:
    if raw not in ("plain", "json"):
        raise ValueError("use plain or json")
    return raw


# docker-compose.yml sets json: one object per line, with file, cluster, webhook and
# delivery ids as fields a log shipper can index.
LOG_FORMAT: str = config.read(env, "LOG_FORMAT", "plain", _log_format)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "calltelemetry.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "calltelemetry.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# Workers log through LOGGING above like every other process, not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
