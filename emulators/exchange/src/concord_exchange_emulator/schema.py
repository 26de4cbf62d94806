"""The EWS XSDs: response validation and the schema order of item fields."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Iterator
from typing import Any

from lxml import etree

from concord_exchange_emulator.xmlns import XS, M, T

XSD_DIR = pathlib.Path(__file__).parent / "xsd"


def _entry_documents() -> tuple[bytes, bytes]:
    # The vendor files import the types namespace from several files, and libxml2 honours only the
    # first import of a namespace: one wrapper that includes every types file must come first.
    # Absolute locations: the wrapper is parsed from a string, which has no base URL of its own.
    types = sorted(p.as_uri() for p in XSD_DIR.glob("MS-*-types.xsd"))
    xml_xsd = (XSD_DIR / "xml.xsd").as_uri()
    all_types = (
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="{T}" elementFormDefault="qualified">'
        f'<xs:import namespace="http://www.w3.org/XML/1998/namespace" schemaLocation="{xml_xsd}"/>'
        + "".join(f'<xs:include schemaLocation="{name}"/>' for name in types)
        + "</xs:schema>"
    ).encode()
    entry = (
        f'<xs:schema xmlns:xs="{XS}" targetNamespace="{M}" elementFormDefault="qualified">'
        f'<xs:import namespace="{T}" schemaLocation="all-types.xsd"/>'
        '<xs:include schemaLocation="MS-OXWSCDATA-messages.xsd"/>'
        # Delegate management is a messages file the common one does not include.
        '<xs:include schemaLocation="MS-OXWSDLGM-message.xsd"/>'
        "</xs:schema>"
    ).encode()
    return all_types, entry


class _WrapperResolver(etree.Resolver):
    def __init__(self, all_types: bytes) -> None:
        super().__init__()
        self._all_types = all_types

    # lxml passes a context argument that lxml-stubs leave out.
    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:  # type: ignore[override]
        if system_url.endswith("all-types.xsd"):
            return self.resolve_string(self._all_types, context, base_url=system_url)
        return None


@functools.cache
def validator() -> etree.XMLSchema:
    """The compiled messages schema (types included); ~0.1 s the first time."""
    all_types, entry = _entry_documents()
    parser = etree.XMLParser()
    parser.resolvers.add(_WrapperResolver(all_types))
    doc = etree.fromstring(entry, parser, base_url=str(XSD_DIR / "entry.xsd"))
    return etree.XMLSchema(etree.ElementTree(doc))


def validation_errors(body_child: etree._Element) -> list[str]:
    """Schema errors of one SOAP body element (a `m:*Response`), empty when it is valid."""
    schema = validator()
    doc = etree.ElementTree(etree.fromstring(etree.tostring(body_child)))
    if schema.validate(doc):
        return []
    return str(schema.error_log).splitlines()


@functools.cache
def _type_definitions() -> dict[str, etree._Element]:
    found: dict[str, etree._Element] = {}
    for path in sorted(XSD_DIR.glob("MS-*-types.xsd")):
        doc = etree.parse(str(path))
        for node in doc.getroot().iterfind(f"{{{XS}}}complexType"):
            found.setdefault(node.get("name", ""), node)
    return found


def _sequence_elements(node: etree._Element) -> Iterator[tuple[str, str]]:
    for child in node:
        if child.tag == f"{{{XS}}}element" and child.get("name"):
            yield child.get("name", ""), child.get("type", "")
        elif child.tag in {f"{{{XS}}}sequence", f"{{{XS}}}choice", f"{{{XS}}}all"}:
            yield from _sequence_elements(child)


@functools.cache
def field_types(type_name: str) -> tuple[tuple[str, str], ...]:
    """(name, XSD type) of an XSD complex type's child elements in schema order, base first."""
    node = _type_definitions()[type_name]
    fields: list[tuple[str, str]] = []
    extension = node.find(f"{{{XS}}}complexContent/{{{XS}}}extension")
    if extension is not None:
        fields.extend(field_types(extension.get("base", "").split(":")[-1]))
        fields.extend(_sequence_elements(extension))
    else:
        fields.extend(_sequence_elements(node))
    return tuple(fields)


def field_order(type_name: str) -> tuple[str, ...]:
    """Child element names of an XSD complex type in schema order, base types first.

    Items are stored as the XML a client sent, and updates add or replace single fields: putting
    the children back in this order keeps every stored item valid against the schema.
    """
    return tuple(name for name, _ in field_types(type_name))


@functools.cache
def boolean_fields(type_name: str) -> frozenset[str]:
    return frozenset(name for name, kind in field_types(type_name) if kind == "xs:boolean")
