"""Folders' user configurations (#15): named settings a folder keeps — a dictionary, XML data
and binary data — created once per name, read whole or in part, updated part by part, deleted;
each folder has its own."""

from __future__ import annotations

from typing import Any

import pytest
from exchangelib.errors import ErrorItemNotFound, ErrorItemSave  # type: ignore[import-untyped]
from exchangelib.folders import Messages  # type: ignore[import-untyped]

pytestmark = pytest.mark.integration


def test_a_configuration_lives_and_dies_with_its_name_in_its_folder(account: Any) -> None:
    folder = Messages(parent=account.inbox, name="settings").save()
    with pytest.raises(ErrorItemNotFound):
        folder.get_user_configuration(name="Concord.Sync")
    folder.create_user_configuration(
        name="Concord.Sync",
        dictionary={"interval": 5, "on": True},
        xml_data=b"<a/>",
        binary_data=b"\x00\x01",
    )
    config = folder.get_user_configuration(name="Concord.Sync")
    assert (config.dictionary, config.xml_data, config.binary_data) == (
        {"interval": 5, "on": True},
        b"<a/>",
        b"\x00\x01",
    )
    assert config.id is not None
    with pytest.raises(ErrorItemSave):
        folder.create_user_configuration(name="Concord.Sync")
    with pytest.raises(ErrorItemNotFound):
        account.inbox.get_user_configuration(name="Concord.Sync")
    folder.update_user_configuration(name="Concord.Sync", xml_data=b"<b/>")
    only_xml = folder.get_user_configuration(name="Concord.Sync", properties="XmlData")
    assert (only_xml.dictionary, only_xml.xml_data, only_xml.binary_data) == (None, b"<b/>", None)
    # Parts the update did not name are kept.
    assert folder.get_user_configuration(name="Concord.Sync").binary_data == b"\x00\x01"
    folder.delete_user_configuration(name="Concord.Sync")
    with pytest.raises(ErrorItemNotFound):
        folder.get_user_configuration(name="Concord.Sync")
    with pytest.raises(ErrorItemNotFound):
        folder.delete_user_configuration(name="Concord.Sync")
    # A folder's configurations are not among its items.
    assert list(folder.all()) == []
