#!/bin/sh
# Creates MLflow's tracking and auth databases next to Prefect's (POSTGRES_DB); names from
# stack.env (the service's env_file). Runs once, on an empty volume.
set -eu
for db in "$MLFLOW_DB" "$MLFLOW_AUTH_DB"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\";"
done
