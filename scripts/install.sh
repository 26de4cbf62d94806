#!/usr/bin/env bash
# Installs what `make up` and `make test` need on a fresh machine: uv (from PyPI), the workspace
# into .venv (uv.lock, frozen), and the Debian packages the integration tests run for real.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1 && [ ! -x .tools/bin/uv ]; then
  echo "installing uv into .tools/ ..." >&2
  python3 -m venv .tools
  .tools/bin/pip install -q uv
fi
UV=$(command -v uv 2>/dev/null || echo .tools/bin/uv)

# Bytecode is compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on CI machines), every
# Python process would otherwise compile its imports from source at each start, about 2 s of CPU
# for a service's libraries, paid by every service and test worker the suites start.
"$UV" sync --frozen --all-packages --quiet --compile-bytecode

# PostgreSQL: the stores are tested against it as well as SQLite, and `make up PROFILE=production`
# runs on it.
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing postgresql (Debian) ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: PostgreSQL is not installed; its tests and \`make up PROFILE=production\` will fail." \
      "Install the 'postgresql' package." >&2
  fi
fi

# kubectl renders the Kubernetes overlays offline (`make render`, tests/deploy).
if ! command -v kubectl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing kubectl (Debian kubernetes-client) ..." >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
  else
    echo "note: kubectl is not installed; the deploy tests will fail." >&2
  fi
fi
