"""The local CA and server certificate."""

from __future__ import annotations

import ipaddress
import pathlib

import pytest
from cryptography import x509

from concord_devcerts import ensure_tls, server_context

pytestmark = pytest.mark.unit


def test_the_certificate_is_signed_by_the_ca_and_reused(tmp_path: pathlib.Path) -> None:
    files = ensure_tls(tmp_path, "Test")
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert files.key.stat().st_mode & 0o077 == 0
    before = files.cert.read_bytes()
    assert ensure_tls(tmp_path, "Test").cert.read_bytes() == before
    assert server_context(files) is not None
