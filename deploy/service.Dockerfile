# The image of each of the four services: SERVICE is its directory, UID the
# user it runs as (who owns its private key in docker-compose's keys volume).
# Build from the repository root (the chassis is copied too), e.g.
#   docker build -f deploy/service.Dockerfile --build-arg SERVICE=order_service --build-arg UID=10002 -t lab-order .
# docker-compose.yml starts every app with the same command: migrate, seed, gunicorn.
FROM python:3.11-slim

ARG SERVICE
ARG UID

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# mysqlclient is compiled against the MariaDB client library.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app/${SERVICE}

# Requirements first, so that a code change does not reinstall them.
COPY chassis/ /app/chassis/
COPY ${SERVICE}/requirements.txt /app/${SERVICE}/requirements.txt
RUN pip install -r requirements.txt

COPY ${SERVICE}/ /app/${SERVICE}/
# collectstatic only reads settings; the throwaway key never serves a request.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

RUN test -n "${UID}" \
    && useradd --system --uid ${UID} --home-dir /app --no-create-home lab \
    && mkdir -p /app/var \
    && chown -R lab /app/var
USER lab
