#!/usr/bin/env bash
# Renders every overlay (each directory deploy/k8s/overlays/<overlay>/) into
# var/render/<overlay>.yaml and
# validates it offline: `kubernetes-validate --strict` for the built-in kinds, deploy/validate.py
# for custom resources (KEDA) and skaffold.yaml. Any problem exits non-zero.
#   KUBERNETES_VERSIONS  the versions to validate against (default: oldest supported, newest)
#   RENDER_DIR           where the rendered manifests go (default: var/render)
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-"1.30.0 1.37.0"}
RENDER_DIR=${RENDER_DIR:-var/render}
KUBECTL=${KUBECTL:-kubectl}

command -v "$KUBECTL" >/dev/null || { echo "render: kubectl not found (set KUBECTL)" >&2; exit 2; }
mkdir -p "$RENDER_DIR"
rm -f "$RENDER_DIR"/*.yaml

versions=()
for v in $KUBERNETES_VERSIONS; do versions+=(--kubernetes-version "$v"); done

rendered=()
for dir in deploy/k8s/overlays/*/; do
  out="$RENDER_DIR/$(basename "$dir").yaml"
  "$KUBECTL" kustomize "$dir" >"$out"
  echo "rendered $out ($(grep -c '^kind:' "$out") objects)"
  rendered+=("$out")
done
[ ${#rendered[@]} -gt 0 ] || { echo "render: no overlays found" >&2; exit 1; }

status=0
# --no-warn: a kind without a built-in schema is deploy/validate.py's to check (or reject).
kubernetes-validate --strict --quiet --no-warn "${versions[@]}" "${rendered[@]}" || status=1
python deploy/validate.py "${versions[@]}" --skaffold skaffold.yaml "${rendered[@]}" || status=1

if [ "$status" -eq 0 ]; then
  echo "render: ${#rendered[@]} overlays and skaffold.yaml valid (Kubernetes $KUBERNETES_VERSIONS)"
else
  echo "render: validation failed" >&2
fi
exit "$status"
