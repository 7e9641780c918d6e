# The importance store: numpy, grpcio, fsspec (+ s3fs). No torch, no Ray.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ISLOADER_HOST=0.0.0.0 \
    ISLOADER_PORT=50051

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY isloader ./isloader
# Within constraints.txt: the versions the test suite ran with, and no resolver backtracking.
RUN pip install -c constraints.txt ".[store]" \
    && useradd --system --uid 10001 --home-dir /var/lib/isloader --create-home isloader

USER isloader
WORKDIR /var/lib/isloader
EXPOSE 50051 9100

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["isloader", "store", "health", "127.0.0.1:50051"]

ENTRYPOINT ["isloader", "store", "serve"]
