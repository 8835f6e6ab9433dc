# One image for the web (the default command), the monitor, and the demo's
# worker and producer. Only the runtime lock is installed; static files are
# collected at build time and served by whitenoise. See docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# The lock pins the whole runtime tree (tests/test_locks.py keeps it complete),
# so --no-deps installs exactly what was tested. A layer of its own: rebuilt
# only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock

COPY . .

# collectstatic reads the settings but needs no database and no real secret.
RUN DEBUG=false SECRET_KEY=build-time-placeholder DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --no-input -v 0

# The code stays root's; the processes run as a user that cannot change it.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
USER app

EXPOSE 8000
# gunicorn.conf.py (read from /app) sets timeouts and the log format.
CMD ["gunicorn", "dashboard.wsgi", "--bind", "0.0.0.0:8000"]
