# The archiver service image: `docker compose up` (see docker-compose.yml and
# README "Operations / running at scale"). Not built in CI: there is no Docker
# engine there.
FROM python:3.11-slim

# WeasyPrint (the `reports` extra) needs Pango and HarfBuzz at runtime, plus one font.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Every dependency (and the build backend) from the hashed lock written by
# scripts/lock, then the project itself without resolving anything.
COPY requirements/pip.txt requirements/serve.txt ./requirements/
RUN pip install --require-hashes -r requirements/pip.txt \
 && pip install --require-hashes -r requirements/serve.txt
COPY pyproject.toml ./
COPY archiver ./archiver
RUN pip install --no-deps --no-build-isolation .
COPY policies ./policies
COPY templates ./templates

# Never run as root; the named volume at ARCHIVER_HOME inherits this owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/archiver --create-home archiver
USER archiver
ENV ARCHIVER_HOME=/var/lib/archiver \
    ARCHIVER_POLICIES=/app/policies

EXPOSE 8080
CMD ["archiver", "serve", "--host", "0.0.0.0"]
