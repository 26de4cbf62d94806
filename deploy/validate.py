"""What `kubernetes-validate` cannot check: custom resources and skaffold.yaml.

`kubernetes-validate --strict` (run by scripts/render.sh) validates every built-in kind and
only warns about kinds it has no schema for. This script closes that gap: every rendered
object must be either a kind kubernetes-validate knows or one with a strict schema in
deploy/schemas/ (validated here); anything else is an error, not a skipped warning. It also
validates each document of skaffold.yaml against the skaffold JSON schema.

Usage: validate.py --kubernetes-version 1.30.0 [--skaffold skaffold.yaml] RENDERED.yaml...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as k8s  # type: ignore[import-untyped]

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# (apiVersion, kind) -> schema file, for kinds the Kubernetes schemas do not include.
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject-keda-v1alpha1.json",
}
SKAFFOLD_SCHEMAS = {"skaffold/v4beta14": SCHEMAS / "skaffold-v4beta14.json"}


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    ]


def check_manifests(paths: list[Path], versions: list[str]) -> list[str]:
    problems: list[str] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion", ""), doc.get("kind", ""))
            name = f"{path.name}: {key[1]}/{doc.get('metadata', {}).get('name', '?')}"
            if key in CUSTOM_RESOURCES:
                schema = _load(CUSTOM_RESOURCES[key])
                validator = jsonschema.Draft202012Validator(schema)
                problems += [f"{name}: {e}" for e in _errors(validator, doc)]
                continue
            for version in versions:
                try:
                    k8s.validate(doc, version, strict=True)
                except k8s.SchemaNotFoundError:
                    problems.append(
                        f"{name}: no schema for {key[0]} {key[1]} in Kubernetes {version} nor in "
                        f"deploy/schemas/ (add one to CUSTOM_RESOURCES in deploy/validate.py)"
                    )
                except k8s.ValidationError as error:
                    problems.append(f"{name}: Kubernetes {version}: {error.message}")
    return problems


def check_skaffold(path: Path) -> list[str]:
    problems: list[str] = []
    for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
        api_version = (doc or {}).get("apiVersion")
        if api_version not in SKAFFOLD_SCHEMAS:
            problems.append(f"{path.name} document {index}: unsupported apiVersion {api_version!r}")
            continue
        validator = jsonschema.Draft7Validator(_load(SKAFFOLD_SCHEMAS[api_version]))
        problems += [f"{path.name} document {index}: {e}" for e in _errors(validator, doc)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("--skaffold", type=Path)
    parser.add_argument("manifests", nargs="*", type=Path)
    args = parser.parse_args(argv)
    problems = check_manifests(args.manifests, args.kubernetes_version)
    if args.skaffold:
        problems += check_skaffold(args.skaffold)
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
