"""Comparing a recorded Salesforce body with the emulator's by shape, not by value."""

from __future__ import annotations

from typing import Any


def shape_mismatches(
    recorded: Any, ours: Any, where: str = "$", hand_edited: bool = False
) -> list[str]:
    if recorded is None or ours is None:
        return []
    if isinstance(recorded, bool) or isinstance(ours, bool):
        return [] if isinstance(recorded, bool) == isinstance(ours, bool) else [where]
    if isinstance(recorded, int | float) and isinstance(ours, int | float):
        return []
    if type(recorded) is not type(ours):
        return [f"{where}: {type(recorded).__name__} != {type(ours).__name__}"]
    if isinstance(recorded, dict):
        problems = []
        # A hand-edited recording (CumulusCI's `ManualEdit` cassettes) drops keys it does not
        # need, so only its keys must be present; otherwise the key sets must be equal.
        missing = set(recorded) - set(ours) if hand_edited else set(recorded) ^ set(ours)
        if missing:
            problems.append(f"{where}: keys {sorted(missing)}")
        for key in set(recorded) & set(ours):
            problems += shape_mismatches(recorded[key], ours[key], f"{where}.{key}", hand_edited)
        return problems
    if isinstance(recorded, list):
        problems = []
        for index, (left, right) in enumerate(zip(recorded, ours, strict=False)):
            problems += shape_mismatches(left, right, f"{where}[{index}]", hand_edited)
        return problems
    return []
