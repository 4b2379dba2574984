#!/bin/sh
# Creates the MLflow database next to Prefect's (POSTGRES_DB). Runs once, on an empty volume.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE mlflow OWNER \"$POSTGRES_USER\";"
