"""XML namespaces of SOAP and EWS, and small element helpers."""

from __future__ import annotations

from lxml import etree

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"s": S, "m": M, "t": T}


def m(name: str) -> str:
    return f"{{{M}}}{name}"


def t(name: str) -> str:
    return f"{{{T}}}{name}"


def local(tag: object) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    node = etree.SubElement(parent, tag, attrs)
    if text is not None:
        node.text = text
    return node
