#!/usr/bin/env bash
# Generates libs/protos/src/concord from protos/ (generate), or fails on any drift between the
# two and on lint/format findings (check). Runs offline with the workspace's buf, grpcio-tools
# and mypy-protobuf: call it as `uv run --frozen scripts/protos.sh generate|check`.
set -euo pipefail
cd "$(dirname "$0")/.."

out=libs/protos/src

# grpc_python writes a *_pb2_grpc module for every file; those of files without a service hold
# nothing but a version check. buf writes modules only; Python needs a package marker in every
# generated directory, and py.typed so mypy reads the .pyi stubs.
add_package_files() {
  local root=$1
  local module
  for module in $(find "$root/concord" "$root/eventbus" -name '*_pb2_grpc.py'); do
    grep -q '^class .*Stub' "$module" || rm -f "$module" "${module}i"
  done
  find "$root/concord" "$root/eventbus" -type d -exec touch {}/__init__.py \;
  touch "$root/concord/py.typed"
}

generate_into() {
  local dest=$1
  buf generate --output "$dest"
  add_package_files "$dest/$out"
}

case "${1:-}" in
  generate)
    rm -rf "$out/concord" "$out/eventbus"
    generate_into .
    ;;
  check)
    status=0
    buf lint || status=1
    buf format -d --exit-code || status=1
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate_into "$tmp"
    if ! diff -ru --exclude=__pycache__ "$out/concord" "$tmp/$out/concord" \
      || ! diff -ru --exclude=__pycache__ "$out/eventbus" "$tmp/$out/eventbus"; then
      echo "libs/protos is out of date with protos/: run 'make protos' and commit the result" >&2
      status=1
    fi
    exit "$status"
    ;;
  *)
    echo "usage: $0 generate|check" >&2
    exit 2
    ;;
esac
