from __future__ import annotations

import pytest

from concord_mapping.adapters.packaged import read_table_file, table_data
from concord_mapping.domain.table import parse_table
from services.mapping.tests.fidelity import calendar_files, measure

pytestmark = pytest.mark.unit

# Measured on icalendar 7.3 and recurring-ical-events 3.8 (1,325 readable events): 92.2% exact
# with the default table; the rest are refused with a reason (RDATE, RFC 7529 scales, custom
# VTIMEZONE-only zones, floating times, malformed rules).
EXACT_BAR = 0.90
LEGACY_EXACT_BAR = 0.75


@pytest.mark.timeout(120)
def test_real_calendars_round_trip_exactly_or_are_reported_unsupported() -> None:
    assert len(calendar_files()) > 200
    report = measure()
    counts = report.counts
    print(
        f"\nfidelity: {counts['exact']} exact, {counts['lossy']} lossy, "
        f"{counts['unsupported']} unsupported, {counts['altered']} altered, "
        f"{counts['unreadable']} unreadable; exact share {report.share('exact'):.1%}; "
        f"unsupported by reason {dict(report.reasons('unsupported'))}"
    )
    altered = [(o.source, o.reason) for o in report.outcomes if o.status == "altered"]
    assert altered == []
    assert counts["exact"] > 1000
    assert report.share("exact") >= EXACT_BAR


@pytest.mark.timeout(120)
def test_legacy_salesforce_recurrence_refuses_rather_than_alters() -> None:
    content = read_table_file("event.yaml")
    for rule in content["rules"]:
        if rule["crm_field"] == "Recurrence2PatternText":
            rule["to_crm"] = {"name": "recurrence_rrule", "params": {"format": "legacy"}}
    report = measure(parse_table(content, table_data().schema))
    assert [o for o in report.outcomes if o.status == "altered"] == []
    assert report.reasons("unsupported")["UNSUPPORTED_RECURRENCE"] > 30
    assert report.share("exact") >= LEGACY_EXACT_BAR
