# Trainers and the demo: torch (CPU build), Ray Data, pyarrow, isloader.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY isloader ./isloader
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.3,<3" \
    && pip install ".[demo]" \
    && useradd --system --uid 10001 --create-home trainer

USER trainer
WORKDIR /home/trainer

ENTRYPOINT ["isloader"]
CMD ["demo"]
