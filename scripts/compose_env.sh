#!/usr/bin/env bash
# Write the secrets of docker-compose.yml into an env file (default compose.env, gitignored, mode
# 0600), each a fresh random value; an existing file is kept (rotating a secret means editing it
# and recreating the services that read it). Then:
#
#   docker-compose --env-file compose.env up -d
#
# Usage: scripts/compose_env.sh [FILE]
set -euo pipefail

FILE="${1:-compose.env}"
if [ -e "$FILE" ]; then
  echo "[compose_env] $FILE exists; kept"
  exit 0
fi
umask 077
python3 - "$FILE" <<'PY'
import base64, os, secrets, sys

token = lambda: secrets.token_urlsafe(32)  # noqa: E731
values = {
    "POSTGRES_PASSWORD": token(),
    "REDIS_PASSWORD": token(),
    "MINIO_ROOT_USER": "minio-root-" + secrets.token_hex(4),
    "MINIO_ROOT_PASSWORD": token(),
    "MLP_S3_ACCESS_KEY": "mlplatform-" + secrets.token_hex(4),
    "MLP_S3_SECRET_KEY": token(),
    # a Fernet key is 32 url-safe base64-encoded bytes
    "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_JWT_SECRET": token(),
    "AIRFLOW_API_SECRET_KEY": token(),
}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write("# docker-compose secrets (scripts/compose_env.sh); keep private, never commit\n")
    out.writelines(f"{k}={v}\n" for k, v in values.items())
PY
echo "[compose_env] wrote $FILE (mode 0600)"
