"""The README and docs/architecture.md say what is built: these checks keep them honest."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()

pytestmark = pytest.mark.unit


def _registered_providers() -> set[str]:
    """The providers the mail-connector's process registers (`providers={Provider.X: ...}`)."""
    main = ROOT / "services/mail-connector/src/concord_mail_connector/__main__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(main.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "providers":
            assert isinstance(node.value, ast.Dict), "providers= must be a dict literal"
            for key in node.value.keys:
                assert isinstance(key, ast.Attribute), key and ast.dump(key)
                found.add(key.attr)
    return found


def _readme_providers() -> set[str]:
    block = re.search(r"<!-- providers -->(.*?)<!-- /providers -->", README, re.S)
    assert block is not None, "README.md has no <!-- providers --> list"
    return set(re.findall(r"^- `([A-Z_]+)`", block.group(1), re.M))


def test_the_readme_lists_exactly_the_registered_mail_providers() -> None:
    registered = _registered_providers()
    assert registered, "found no providers= in the mail-connector's __main__"
    assert _readme_providers() == registered


_METADATA = {
    "reconciler": "concord_reconciler.kernel.schema",
    "mail-connector": "concord_mail_connector.adapters.tables",
    "crm-connector": "concord_crm_connector.adapters.tables",
    "mapping": "concord_mapping.adapters.tables",
    "linker": "concord_linker.adapters.tables",
}


def _documented_tables() -> dict[str, set[str]]:
    """The `state (tables)` column of the services table in docs/architecture.md."""
    documented: dict[str, set[str]] = {}
    for line in ARCHITECTURE.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in _METADATA:
            # "mailbox_accounts (secret sealed), sync_cursors" -> the leading names
            names = re.sub(r"\([^)]*\)", "", cells[4])
            documented[cells[0]] = {n.strip() for n in names.split(",") if n.strip()}
    return documented


@pytest.mark.parametrize("service", sorted(_METADATA))
def test_the_architecture_names_exactly_each_services_tables(service: str) -> None:
    metadata = importlib.import_module(_METADATA[service]).metadata
    assert _documented_tables().get(service) == set(metadata.tables)


def test_every_library_has_a_readme() -> None:
    libraries = [p for p in (ROOT / "libs").iterdir() if (p / "pyproject.toml").exists()]
    assert libraries
    missing = sorted(p.name for p in libraries if not (p / "README.md").is_file())
    assert missing == []
