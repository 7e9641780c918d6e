# Prometheus for the compose `monitoring` profile, from Debian's own package: the FROM
# image is the Debian bookworm base the store image uses (deploy/offline/base-image.sh
# makes it from Debian packages where no registry can be reached).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/prometheus/prometheus.yml /etc/prometheus/prometheus.yml

USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus", "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/var/lib/prometheus/metrics2", "--web.listen-address=:9090"]
