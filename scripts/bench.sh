#!/usr/bin/env bash
# `make bench`: every benchmark, each printing measured figures and ratios against a baseline
# measured in the same run. Exits non-zero if any misses its target. Run it on an idle machine.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
py="$root/.venv/bin/python"
status=0
for bench in local_stack dags_sync normalise carte_db_apply ingestion compute_acteurs dedup; do
  echo "=== bench/$bench.py ==="
  if ! "$py" "bench/$bench.py"; then
    echo "=== bench/$bench.py: target missed ===" >&2
    status=1
  fi
  echo
done
exit $status
