#!/usr/bin/env bash
# Mirror the environment's DAG bucket (CleverCloud Cellar / any S3) into AIRFLOW__CORE__DAGS_FOLDER.
#
# Run every 5 minutes by the DAG download_dags_from_s3, or by hand. Configuration (environment):
#   ENVIRONMENT                  development (or unset): do nothing; preprod / prod: sync
#   AIRFLOW__CORE__DAGS_FOLDER   folder to publish (becomes a symlink to a release directory)
#   CELLAR_ADDON_HOST            bare host (https:// is added) or full URL (http://127.0.0.1:9000)
#   CELLAR_ADDON_KEY_ID, CELLAR_ADDON_KEY_SECRET, CELLAR_ADDON_BUCKET ("bucket" or "bucket/prefix")
#   DAGS_S3_PREFIX               optional key prefix inside the bucket
#   DAGS_SYNC_MAX_OBJECT_BYTES   objects above this size are refused (default 10 MB)
#   DAGS_SYNC_RELEASES_DIR       where release trees live (default: .<folder>.releases beside it)
#   DAGS_SYNC_PYTHON             interpreter with botocore (default: python3 on PATH)
# The work is done by scripts/dags_sync.py and its package scripts/dags_delivery/ (kept outside the
# DAG folder so a sync never touches them).
# Exit codes: 0 ok, 1 S3/disk failure (last good tree kept), 2 configuration, 3 keys refused,
# 75 deploy in progress or another sync running (retried by the next run).
set -euo pipefail

# One vocabulary everywhere (the entrypoints, download_dags.py): development, preprod, prod.
case "${ENVIRONMENT:-development}" in
  development)
    echo "dags sync: ENVIRONMENT=${ENVIRONMENT:-unset}: DAGs come from the working tree, nothing to do"
    exit 0
    ;;
  preprod | prod) ;;
  *)
    echo "dags sync: FAILED: ENVIRONMENT='${ENVIRONMENT}' is unknown (expected development, preprod or prod)" >&2
    exit 2
    ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helper="${DAGS_SYNC_HELPER:-${here}/scripts/dags_sync.py}"
python="${DAGS_SYNC_PYTHON:-python3}"

if [[ ! -f "${helper}" ]]; then
  echo "dags sync: FAILED: helper not found at ${helper} (set DAGS_SYNC_HELPER)" >&2
  exit 2
fi
# -E: ignore PYTHONPATH (the images put the DAG folder on it: a synced file named like a standard
# module must never be imported by the sync itself); -s: no user site. Credentials travel in the
# environment, never on the command line.
exec "${python}" -E -s "${helper}"
