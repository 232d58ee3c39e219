"""Settings of the standalone server. Everything is set by TETHER_* environment variables.

Production: set TETHER_PRODUCTION=1 (HTTPS-only cookies, HSTS, SSL redirect, no debug),
TETHER_SECRET_KEY and TETHER_ALLOWED_HOSTS. ``tether manage check --deploy`` is then clean.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from tether.server.config import (
    database,
    env_bool,
    env_bytes,
    env_count,
    env_networks,
    env_origins,
    home,
    private_umask,
    secret_key,
    user_dir,
)

private_umask()  # every server, worker and manage command loads these settings first
TETHER_HOME = home()
# uploads and exports (``uploads/``, ``exports/``): shared storage when API servers and
# workers run on several machines
TETHER_DATA_DIR = user_dir(
    Path(os.environ.get("TETHER_DATA_DIR") or TETHER_HOME).expanduser().resolve()
)
PRODUCTION = env_bool("TETHER_PRODUCTION")
DEBUG = env_bool("TETHER_DEBUG") and not PRODUCTION
SECRET_KEY = secret_key(TETHER_HOME)
ALLOWED_HOSTS = [  # tests add Django's "testserver" themselves
    h.strip()
    for h in os.environ.get("TETHER_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("TETHER_CSRF_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tether.apps.TetherConfig",
    *[a for a in os.environ.get("TETHER_APPS", "").split(",") if a],
]

MIDDLEWARE = [
    "tether.api.errors.ApiErrorMiddleware",  # first: JSON under /api/ whatever follows
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tether.server.urls"
ASGI_APPLICATION = "tether.server.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": database(TETHER_HOME)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = TETHER_HOME / "static"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024  # JSON bodies; file uploads have their own limit

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tether.api.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["tether.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "tether.api.schema.TetherAutoSchema",
    "EXCEPTION_HANDLER": "tether.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tether API",
    "DESCRIPTION": "Long-running tasks you can pause, resume, cancel with rollback and "
    "watch. Authenticate with `Authorization: Token <token>` from "
    "POST /api/v1/auth/token.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "OAS_VERSION": "3.1.0",  # JSON Schema 2020-12: task params schemas as they are
    "ENUM_NAME_OVERRIDES": {"TaskStatus": "tether.states.STATUS_CHOICES"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tether.api.schema.service_limits",
        "tether.api.stream_schema.document_event_stream",  # served outside DRF
    ],
}

BROKER_URL = os.environ.get("TETHER_BROKER_URL", "")
TETHER = {
    "EXECUTOR": os.environ.get("TETHER_EXECUTOR", "celery" if BROKER_URL else "embedded"),
    "BROKER_URL": BROKER_URL,
    "LEASE_SECONDS": float(os.environ.get("TETHER_LEASE_SECONDS", "30")),
    "REPUBLISH_SECONDS": float(os.environ.get("TETHER_REPUBLISH_SECONDS", "60")),
    "TOKEN_TTL": timedelta(days=float(os.environ.get("TETHER_TOKEN_TTL_DAYS", "30"))),
    "AUTH_RATE": os.environ.get("TETHER_AUTH_RATE", "60/min"),
    "CONTROL_WAIT": float(os.environ.get("TETHER_CONTROL_WAIT_MS", "100")) / 1000,
    "CANCEL_GRACE": float(os.environ.get("TETHER_CANCEL_GRACE_SECONDS", "10")),
    # largest CSV file POST /api/v1/datasets/import accepts (bytes; 512M, 2G also work)
    "MAX_UPLOAD_BYTES": env_bytes("TETHER_MAX_UPLOAD_BYTES", 2 * 1024**3),
    # proxies whose X-Forwarded-For names the client (addresses or CIDRs); without them
    # the peer address is the client, whatever headers say
    "TRUSTED_PROXIES": env_networks("TETHER_TRUSTED_PROXIES"),
    # web pages (besides the server's own) whose scripts may open /ws/v1 with the
    # user's session cookie: an Origin header naming another site is refused (4403)
    "ALLOWED_ORIGINS": env_origins("TETHER_ALLOWED_ORIGINS"),
    # status events a slow event-stream client may have waiting before it is closed
    # (WebSocket 4008) and resumes with since; progress only ever keeps the latest
    "EVENT_QUEUE_LIMIT": env_count("TETHER_EVENT_QUEUE_LIMIT", 10_000),
    # WebSocket connections (and, apart, SSE streams) one user may hold open at once
    "STREAMS_PER_USER": env_count("TETHER_STREAMS_PER_USER", 64),
    # largest CSV field (cell) an import reads; a record may be 16 times as long
    "CSV_MAX_FIELD_BYTES": env_bytes("TETHER_CSV_MAX_FIELD_BYTES", 1024**2),
    # most columns (fields of a record) an import takes; fewer where the database
    # allows fewer in a table (MariaDB/MySQL 1,016, PostgreSQL 1,599, SQLite 1,999)
    "CSV_MAX_COLUMNS": int(os.environ.get("TETHER_CSV_MAX_COLUMNS", "1000")),
    # export files are deleted this long after they were written (default 7 days)
    "EXPORT_TTL": float(os.environ.get("TETHER_EXPORT_TTL_SECONDS", str(7 * 24 * 3600))),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("TETHER_LOG_LEVEL", "WARNING")},
    "loggers": {"tether": {"level": os.environ.get("TETHER_LOG_LEVEL", "INFO")}},
}

if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("TETHER_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
