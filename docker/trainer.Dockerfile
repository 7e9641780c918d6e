# Trainers and the demo: torch (CPU build), Ray Data, pyarrow, isloader.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Where torch's CPU build comes from. Behind a mirror, or offline with a wheel mounted
# into the build, set both (deploy/build-images.sh does for a local wheel folder).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_REQUIREMENT="torch>=2.3,<3"

COPY pyproject.toml README.md constraints.txt ./
COPY isloader ./isloader
RUN pip install --index-url "$TORCH_INDEX_URL" "$TORCH_REQUIREMENT" \
    && pip install -c constraints.txt ".[demo]" \
    && useradd --system --uid 10001 --create-home trainer

USER trainer
WORKDIR /home/trainer

ENTRYPOINT ["isloader"]
CMD ["demo"]
