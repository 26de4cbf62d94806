"""SOAP Autodiscover (MS-OXWSADISC): GetUserSettings at /autodiscover/autodiscover.svc, as
Exchange 2010 and later serve it, so exchangelib's Autodiscovery (and its live tests) can ask the
emulator where a mailbox's EWS endpoint is, and hear that an unknown address has no mailbox."""

from __future__ import annotations

from typing import Any

from lxml import etree

from concord_exchange_emulator.ews import SERVER_VERSION
from concord_exchange_emulator.store import Store
from concord_exchange_emulator.xmlns import XSI, S

PATH = "/autodiscover/autodiscover.svc"
_DEFAULT: Any = None
A = "http://schemas.microsoft.com/exchange/2010/Autodiscover"
WSA = "http://www.w3.org/2005/08/addressing"
ACTION = "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/"
# The EWS schema versions an Exchange 2016 Client Access server lists in EwsSupportedSchemas.
SUPPORTED_SCHEMAS = (
    "Exchange2007, Exchange2007_SP1, Exchange2010, Exchange2010_SP1, Exchange2010_SP2, "
    "Exchange2013, Exchange2013_SP1, Exchange2015, Exchange2016"
)


class AutodiscoverFault(Exception):
    """A request the service cannot read (answered as a SOAP fault, HTTP 500)."""


def _a(name: str) -> str:
    return f"{{{A}}}{name}"


def _add(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    node = etree.SubElement(parent, _a(name))
    if text is not None:
        node.text = text
    return node


def _settings_of(store: Store, address: str, ews_url: str) -> dict[str, str]:
    """The settings the emulator knows for a mailbox; the others are not available."""
    alias = address.split("@", 1)[0]
    build = SERVER_VERSION
    return {
        "UserDisplayName": store.display_name(address),
        "UserDN": (
            "/o=Concord/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/"
            f"cn={alias}"
        ),
        "AutoDiscoverSMTPAddress": address,
        "InternalEwsUrl": ews_url,
        "ExternalEwsUrl": ews_url,
        "EwsSupportedSchemas": SUPPORTED_SCHEMAS,
        "CasVersion": (
            f"{build['MajorVersion']}.{int(build['MinorVersion']):02d}."
            f"{int(build['MajorBuildNumber']):04d}.{int(build['MinorBuildNumber']):03d}"
        ),
    }


def get_user_settings(store: Store, body: bytes, ews_url: str) -> bytes:
    """The GetUserSettingsResponseMessage for a GetUserSettingsRequestMessage: per user its
    settings (the unavailable ones named in UserSettingErrors), or InvalidUser for an address
    with no mailbox."""
    try:
        envelope = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False))
    except etree.XMLSyntaxError as exc:
        raise AutodiscoverFault(f"The request is not XML: {exc}") from None
    request = envelope.find(f"{{{S}}}Body/{_a('GetUserSettingsRequestMessage')}/{_a('Request')}")
    if request is None:
        raise AutodiscoverFault("The request is not a GetUserSettingsRequestMessage.")
    users = [
        (node.text or "").strip() for node in request.iterfind(f"{_a('Users')}/{_a('User')}/*")
    ]
    wanted = [
        (node.text or "").strip()
        for node in request.iterfind(f"{_a('RequestedSettings')}/{_a('Setting')}")
    ]

    answer = etree.Element(f"{{{S}}}Envelope", nsmap={"s": S, "a": WSA})
    header = etree.SubElement(answer, f"{{{S}}}Header")
    action = etree.SubElement(header, f"{{{WSA}}}Action")
    action.set(f"{{{S}}}mustUnderstand", "1")
    action.text = f"{ACTION}GetUserSettingsResponse"
    version = etree.SubElement(header, _a("ServerVersionInfo"), nsmap={"h": A, "i": XSI})
    for name in ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber"):
        _add(version, name, SERVER_VERSION[name])
    # Autodiscover names the 2016 servers' schema family Exchange2015 here.
    _add(version, "Version", "Exchange2015")
    message = etree.SubElement(
        etree.SubElement(answer, f"{{{S}}}Body"),
        _a("GetUserSettingsResponseMessage"),
        # As Exchange writes it: Autodiscover as the default namespace (lxml's stubs type
        # nsmap keys as str; None is how lxml spells the default one).
        nsmap={_DEFAULT: A, "i": XSI},
    )
    response = _add(message, "Response")
    if not users or not wanted:
        _add(response, "ErrorCode", "InvalidRequest")
        _add(response, "ErrorMessage", "The request is missing users or requested settings.")
        return etree.tostring(answer, xml_declaration=True, encoding="utf-8")
    _add(response, "ErrorCode", "NoError")
    _add(response, "ErrorMessage", "")
    listed = _add(response, "UserResponses")
    for address in users:
        user = _add(listed, "UserResponse")
        mailbox = address.lower()
        if not store.mailbox_exists(mailbox):
            _add(user, "ErrorCode", "InvalidUser")
            _add(user, "ErrorMessage", f"Invalid user: '{address}'")
            _add(user, "RedirectTarget").set(f"{{{XSI}}}nil", "true")
            _add(user, "UserSettingErrors")
            _add(user, "UserSettings")
            continue
        known = _settings_of(store, mailbox, ews_url)
        _add(user, "ErrorCode", "NoError")
        _add(user, "ErrorMessage", "No error.")
        _add(user, "RedirectTarget").set(f"{{{XSI}}}nil", "true")
        errors = _add(user, "UserSettingErrors")
        settings = _add(user, "UserSettings")
        for name in wanted:
            if name in known:
                setting = _add(settings, "UserSetting")
                setting.set(f"{{{XSI}}}type", "StringSetting")
                _add(setting, "Name", name)
                _add(setting, "Value", known[name])
                continue
            error = _add(errors, "UserSettingError")
            _add(error, "ErrorCode", "SettingIsNotAvailable")
            _add(error, "ErrorMessage", f"User setting '{name}' is not available. ")
            _add(error, "SettingName", name)
    return etree.tostring(answer, xml_declaration=True, encoding="utf-8")


def fault(text: str) -> bytes:
    envelope = etree.Element(f"{{{S}}}Envelope", nsmap={"s": S})
    body_fault = etree.SubElement(etree.SubElement(envelope, f"{{{S}}}Body"), f"{{{S}}}Fault")
    etree.SubElement(body_fault, "faultcode").text = "s:Client"
    etree.SubElement(body_fault, "faultstring").text = text
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
