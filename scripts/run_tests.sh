#!/usr/bin/env bash
# Run the whole test suite twice: on the embedded default (SQLite and the
# filesystem broker), then on PostgreSQL with a Redis broker when both
# servers are available. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python

bash scripts/services.sh
# The browser test drives Debian's Chromium; install it when it is missing and
# this script may (root). Without it that test is skipped with the reason.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing Chromium for the browser test..."
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "Chromium could not be installed; the browser test will be skipped."
fi
if [ -d locale ]; then
    $PYTHON manage.py compilemessages --ignore=.venv >/dev/null
fi

echo "== Suite on SQLite with the filesystem broker =="
$PYTHON -m pytest "$@"

if pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; then
    echo "== Suite on PostgreSQL with the Redis broker =="
    DATABASE_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/cachecampaign}" \
    CELERY_BROKER_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}" \
        $PYTHON -m pytest "$@"
elif [ -n "${CI:-}" ]; then
    echo "PostgreSQL or Redis is not available; CI needs both." >&2
    exit 1
else
    echo "PostgreSQL or Redis is not available; skipped the second pass."
fi
