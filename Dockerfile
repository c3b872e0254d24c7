# The Call Telemetry appliance image: one image, one process per container (see
# docker-compose.yml for web, worker, beat, watcher and the SFTP receiver).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    CDR_INCOMING_DIR=/data/incoming

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root: the app user can run it but not change it.
COPY . .
# Static files are collected into the image (whitenoise serves them); the key is a
# placeholder so settings load at build time, never used at run time.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /data/incoming \
    && chown -R app:app /data

USER app
EXPOSE 8000 2222
CMD ["gunicorn", "calltelemetry.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--access-logfile", "-"]
