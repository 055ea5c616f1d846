#!/bin/sh
# Airflow services of the compose stack.  `init` migrates the metadata database (one-shot);
# anything else is handed to the airflow CLI (api-server, scheduler, dag-processor, triggerer).
set -eu
# SimpleAuthManager reads its users' passwords from this JSON file; the stack's admin password
# comes from the environment instead of a generated one printed in the logs.
if [ -n "${MLOPS_ADMIN_PASSWORD:-}" ] && [ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]; then
  python3 - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
names = [spec.split(":", 1)[0] for spec in users.split(",") if spec.strip()]
with open(path, "w") as stream:
    json.dump({name: os.environ["MLOPS_ADMIN_PASSWORD"] for name in names}, stream)
os.chmod(path, 0o600)
PY
fi
case "${1:-}" in
  init)
    airflow db migrate
    airflow version
    exit 0
    ;;
esac
exec airflow "$@"
