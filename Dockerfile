# The one image of every process: `pfsync api`, `pfsync worker`, `pfsync scheduler`, `pfsync migrate`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The runtime dependencies exactly as locked (hashes checked), in a layer of their own; then the package itself.
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock
COPY . .
RUN pip install --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /app --create-home pfsync \
    && rm -rf /src

WORKDIR /app
USER pfsync
EXPOSE 8000
CMD ["pfsync", "api", "--host", "0.0.0.0", "--port", "8000"]
