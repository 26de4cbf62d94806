"""Extracts the interfaces (and string-union types) the emulator's answers use from the
typings of the npm package `@microsoft/microsoft-graph-types`, Graph's published metadata as
TypeScript (MIT licence), into `graph_types.json`.

Usage: `npm pack @microsoft/microsoft-graph-types && tar xzf microsoft-*.tgz` then
`python extract_graph_types.py package/microsoft-graph.d.ts`.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

ROOTS = [
    "Event", "Contact", "ContactFolder", "Message", "MailFolder", "TodoTaskList", "TodoTask",
    "Subscription", "OutlookCategory", "SingleValueLegacyExtendedProperty", "ChangeNotification",
    "ChangeNotificationCollection",
]  # fmt: skip
_INTERFACE = re.compile(r"^export interface (\w+)(?: extends (\w+))? \{$")
_PROPERTY = re.compile(r"^    \"?([@\w.]+)\"?\??: (.+);$")
_ALIAS = re.compile(r'^export type (\w+) = ?((?: \| )?"[^"]*"(?: \| "[^"]*")*);$')


def parse(text: str) -> tuple[dict[str, dict[str, object]], dict[str, list[str]]]:
    interfaces: dict[str, dict[str, object]] = {}
    aliases: dict[str, list[str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if (alias := _ALIAS.match(line)) is not None:
            aliases[alias.group(1)] = re.findall(r'"([^"]*)"', alias.group(2))
        elif (head := _INTERFACE.match(line)) is not None:
            current = {}
            interfaces[head.group(1)] = {"extends": head.group(2), "properties": current}
        elif line == "}":
            current = None
        elif current is not None and (prop := _PROPERTY.match(line)) is not None:
            current[prop.group(1)] = prop.group(2)
    return interfaces, aliases


def closure(
    interfaces: dict[str, dict[str, object]], aliases: dict[str, list[str]]
) -> dict[str, object]:
    wanted, seen_aliases, todo = {}, {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted or name not in interfaces:
            if name in aliases:
                seen_aliases[name] = aliases[name]
            continue
        entry = interfaces[name]
        wanted[name] = entry
        if entry["extends"]:
            todo.append(str(entry["extends"]))
        for kind in dict(entry["properties"]).values():  # type: ignore[call-overload]
            todo += re.findall(r"\b([A-Z]\w+)\b", str(kind))
    return {
        "_source": "@microsoft/microsoft-graph-types (npm), microsoft-graph.d.ts; MIT licence,"
        " Copyright (c) Microsoft Corporation",
        "interfaces": dict(sorted(wanted.items())),
        "aliases": dict(sorted(seen_aliases.items())),
    }


if __name__ == "__main__":
    source = pathlib.Path(sys.argv[1]).read_text()
    found = closure(*parse(source))
    out = pathlib.Path(__file__).with_name("graph_types.json")
    out.write_text(json.dumps(found, indent=1, sort_keys=False) + "\n")
    print(f"{len(found['interfaces'])} interfaces, {len(found['aliases'])} aliases -> {out}")  # type: ignore[arg-type]
