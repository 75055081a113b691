#!/usr/bin/env bash
# Upload dags/ to an S3 bucket (CleverCloud Cellar by default) and write the deploy manifest last.
# Used by .github/workflows/_deploy.yml; by hand:
#   AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... DAGS_BUCKET=preprod-data-dags \
#     [S3_ENDPOINT_URL=cellar-c2.services.clever-cloud.com] scripts/deploy_dags.sh [--dry-run]
# See scripts/dags_delivery/deploy.py for the upload / manifest / delete order.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "${here}")"
python="${DEPLOY_PYTHON:-}"
if [[ -z "${python}" ]]; then
  if [[ -x "${repo}/.venv/bin/python" ]]; then python="${repo}/.venv/bin/python"; else python=python3; fi
fi
export DAGS_SOURCE_DIR="${DAGS_SOURCE_DIR:-${repo}/dags}"
exec "${python}" -s "${here}/deploy_dags.py" "$@"
