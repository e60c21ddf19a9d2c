#!/usr/bin/env bash
# Runs once, when the postgres service initialises its data volume (/docker-entrypoint-initdb.d):
# one database per consumer, all owned by POSTGRES_USER: airflow (metadata), mlflow (tracking
# backend), feast (Feast's SQL registry). The names are the last path segment of the URIs in
# docker-compose.yml; tests/test_compose.py checks that they agree.
set -euo pipefail
for db in airflow mlflow feast; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE ${db} OWNER \"${POSTGRES_USER}\";"
done
