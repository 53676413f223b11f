"""Django settings for cachecampaign.

Every deployment-specific value comes from an environment variable with a
default that runs on one machine with nothing installed beyond Python
packages: SQLite, a filesystem Celery broker and tiles on the local disk.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from cachecampaign.env import env_bool, env_float, env_int, env_int_list, env_list, env_str
from cachecampaign.sources_file import load_tile_sources

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CACHECAMPAIGN_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
# NOTE: the fallback key exists so that a fresh clone runs; production
# settings (DJANGO_DEBUG off with DJANGO_ALLOWED_HOSTS set) must provide
# DJANGO_SECRET_KEY, which ``check --deploy`` verifies.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-local-only-" + "x" * 40
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_results",
    "django_celery_beat",
    "campaigns",
    "tiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "cachecampaign.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cachecampaign.urls"
WSGI_APPLICATION = "cachecampaign.wsgi.application"

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

# --- Databases -------------------------------------------------------------
# ``default`` contains Django's own tables, Celery results and beat schedules.
# ``campaigns`` contains the domain collections ``campaign`` and ``points``; it
# is the same database as ``default`` unless MONGODB_URI points it at TVI's
# MongoDB database.

SQLITE_PATH = VAR_DIR / "db.sqlite3"
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{SQLITE_PATH}")
SQLITE_BUSY_TIMEOUT_SECONDS = env_float("SQLITE_BUSY_TIMEOUT_SECONDS", 30.0, minimum=0)


def _relational_database(url: str) -> dict:
    # Workers run one short task per point: reusing a connection across tasks
    # saves a connection setup per task (see CELERY_DB_REUSE_MAX).
    config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 300, minimum=0))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes write the same file: WAL lets readers go on
        # during a write, IMMEDIATE transactions take the write lock up front
        # so two writers queue on the busy timeout instead of deadlocking.
        config["OPTIONS"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        config["TEST"] = {"NAME": env_str("SQLITE_TEST_PATH", str(VAR_DIR / "test-db.sqlite3"))}
    return config


DATABASES = {"default": _relational_database(DATABASE_URL)}

MONGODB_URI = env_str("MONGODB_URI", "")
MONGODB_NAME = env_str("MONGODB_NAME", "")
CAMPAIGNS_DATABASE_URL = env_str("CAMPAIGNS_DATABASE_URL", "")

if MONGODB_URI:
    if not MONGODB_NAME:
        raise ImproperlyConfigured(
            "MONGODB_URI is set but MONGODB_NAME is empty; set MONGODB_NAME to TVI's database name."
        )
    # django-mongodb-backend 5.2.1+ reads the connection string from HOST
    # (parse_uri() is deprecated). The engine is that backend with TVI's
    # documents protected from migrations; see cachecampaign/mongodb_backend.
    DATABASES["campaigns"] = {
        "ENGINE": "cachecampaign.mongodb_backend",
        "HOST": MONGODB_URI,
        "NAME": MONGODB_NAME,
    }
elif CAMPAIGNS_DATABASE_URL:
    DATABASES["campaigns"] = _relational_database(CAMPAIGNS_DATABASE_URL)
else:
    DATABASES["campaigns"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}

DATABASE_ROUTERS = ["cachecampaign.routers.CampaignRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Language and time -----------------------------------------------------
LANGUAGE_CODE = env_str("DJANGO_LANGUAGE_CODE", "pt-br")
LANGUAGES = [("pt-br", _("Brazilian Portuguese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "America/Sao_Paulo")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(VAR_DIR / "static")))

# --- Tiles -----------------------------------------------------------------
TILE_STORAGE_ROOT = Path(env_str("TILE_STORAGE_ROOT", str(VAR_DIR / "tiles")))
TILE_STORAGE_BACKEND = env_str("TILE_STORAGE_BACKEND", "filesystem")

if TILE_STORAGE_BACKEND == "filesystem":
    _tile_storage = {
        "BACKEND": "tiles.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(TILE_STORAGE_ROOT)},
    }
elif TILE_STORAGE_BACKEND == "s3":
    _tile_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("TILE_S3_BUCKET", "tiles"),
            "endpoint_url": env_str("TILE_S3_ENDPOINT_URL", "") or None,
            "location": env_str("TILE_S3_PREFIX", ""),
            "file_overwrite": True,
            "default_acl": None,
        },
    }
else:
    raise ImproperlyConfigured(
        f"TILE_STORAGE_BACKEND={TILE_STORAGE_BACKEND!r} is not supported; use 'filesystem' or 's3'."
    )

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "tiles": _tile_storage,
}

# Tile sources per layer. TILE_SOURCES_FILE names a JSON file of the form
# {"landsat": {"kind": "raster", "catalog": "catalog.json"}, ...}; relative
# paths in it are resolved against the file's folder.
TILE_SOURCES_FILE = env_str("TILE_SOURCES_FILE", "")
RASTER_CATALOG_FILE = env_str("RASTER_CATALOG_FILE", str(VAR_DIR / "raster-catalog.json"))
TILE_SOURCES: dict[str, dict] = {
    "landsat": {"kind": "raster", "catalog": RASTER_CATALOG_FILE},
    "sentinel": {"kind": "raster", "catalog": RASTER_CATALOG_FILE},
}
if TILE_SOURCES_FILE:
    TILE_SOURCES.update(load_tile_sources(Path(TILE_SOURCES_FILE)))

# Zooms and buffer of the "seed" preset, the one the original service used.
TILE_PLAN_ZOOMS = env_int_list("TILE_PLAN_ZOOMS", [12, 13, 14])
TILE_PLAN_BUFFER = env_int("TILE_PLAN_BUFFER", 0, minimum=0)
# Name of the tile-plan preset a campaign uses when it names none.
TILE_PLAN_DEFAULT_PRESET = env_str("TILE_PLAN_DEFAULT_PRESET", "seed")
# Extra or replaced presets: {"name": {"zooms": [13], "buffer": 1, "periods": ["DRY", "WET"]}}.
TILE_PLAN_PRESETS: dict[str, dict] = {}

# Seconds browsers and proxies may keep a served tile.
TILE_HTTP_MAX_AGE = env_int("TILE_HTTP_MAX_AGE", 86400, minimum=0)
# Whether the tile endpoint produces and stores a tile it does not have.
TILE_RENDER_ON_MISS = env_bool("TILE_RENDER_ON_MISS", True)

# --- Caching runs ----------------------------------------------------------
CACHE_DEFAULT_BATCH_SIZE = env_int("CACHE_DEFAULT_BATCH_SIZE", 5, minimum=1)
CACHE_MAX_BATCH_SIZE = env_int("CACHE_MAX_BATCH_SIZE", 1000, minimum=1)
# An active run with no finished point for this many seconds is resumed by
# the watchdog task; it must exceed the slowest point's time.
CACHE_STALL_SECONDS = env_int("CACHE_STALL_SECONDS", 900, minimum=60)
# Days after which the periodic re-cache produces a campaign's stored tiles
# again (see campaigns/recache.py); 0 turns the age check off.
CACHE_MAX_TILE_AGE_DAYS = env_int("CACHE_MAX_TILE_AGE_DAYS", 0, minimum=0)
# Most tiles POST /api/cache/point/start produces inside the request; a point
# whose plan has more is rejected with a hint to start a campaign run.
CACHE_POINT_MAX_TILES = env_int("CACHE_POINT_MAX_TILES", 500, minimum=1)
# Estimates: bytes of one stored tile when storage has no tile of a vis param
# to measure, tiles per second when no recent run measured it, and how many
# stored tiles per vis param are measured.
CACHE_ESTIMATE_TILE_BYTES = env_int("CACHE_ESTIMATE_TILE_BYTES", 50_000, minimum=1)
CACHE_ESTIMATE_TILES_PER_SECOND = env_float("CACHE_ESTIMATE_TILES_PER_SECOND", 5.0, minimum=0.001)
CACHE_ESTIMATE_SAMPLE_TILES = env_int("CACHE_ESTIMATE_SAMPLE_TILES", 20, minimum=1)

# --- Celery ----------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        # Seconds between scans of the queue folder; a short interval keeps a
        # worker's pickup and inspect replies quick.
        "polling_interval": 0.01,
    }
    for _folder in ("queue", "control", "processed"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A task unacknowledged this long is delivered again; it must exceed the
    # longest point task, or a slow point is rendered twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)}

# Redis that stores the in-flight cap and the rate limit of xyz tile sources,
# shared by every worker process on every machine. It defaults to the broker
# when the broker is Redis. An empty value keeps the limits in lock files
# under VAR_DIR/limits, which only the processes of one machine share.
TILE_LIMITS_REDIS_URL = env_str(
    "TILE_LIMITS_REDIS_URL",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else "",
)
# Prefix of every Redis key the limits use; the source's limit group follows it.
TILE_LIMITS_KEY_PREFIX = env_str("TILE_LIMITS_KEY_PREFIX", "cachecampaign:limits")

CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
# Recording the STARTED state costs one result write per task, a tenth of a
# point's time; running tasks are listed by /api/tasks/list instead.
CELERY_TASK_TRACK_STARTED = env_bool("CELERY_TASK_TRACK_STARTED", False)
# Celery's Django fixup closes every database connection around each task
# unless this is set, whatever the value of CONN_MAX_AGE. A new connection per
# task was a fifth of a point's time on PostgreSQL. With this set, a worker
# process reconnects every this many tasks, and after each task it drops
# connections that are broken or older than CONN_MAX_AGE (cachecampaign.celery).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Seconds /api/tasks/list waits for workers to respond to an inspect broadcast.
CELERY_INSPECT_TIMEOUT = env_float("CELERY_INSPECT_TIMEOUT", 1.0, minimum=0.1)
# Seconds /api/tasks/list waits in all before it returns 503.
CELERY_INSPECT_DEADLINE = env_float("CELERY_INSPECT_DEADLINE", 2.5, minimum=0.5)

# --- REST API --------------------------------------------------------------
REST_FRAMEWORK = {
    # HTTP Basic comes first so that a request without credentials gets a 401
    # with a WWW-Authenticate header instead of a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "campaigns.api.errors.json_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "cachecampaign API",
    "DESCRIPTION": "Pre-generates map tiles around the points of inspection campaigns and serves them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Security (production) -------------------------------------------------
if not DEBUG and env_bool("DJANGO_SECURE", False):
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
