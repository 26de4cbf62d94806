"""NTLM (the handshake exchangelib's NTLM auth type performs): connection-based, as in IIS.

A Type 1 message gets a 401 with the server's challenge, a valid Type 3 authenticates the TCP
connection, and later requests on that connection need no Authorization header.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import spnego
import spnego.exceptions

from concord_exchange_emulator.store import Store

# Bounded: a client that drops connections mid-handshake must not grow these forever.
_MAX_CONNECTIONS = 1024
# pyspnego's acceptor reads its credentials from the file that NTLM_USER_FILE names, a
# process-wide setting: this lock keeps each emulator's file in place while it checks a token.
_ENV_LOCK = threading.Lock()

Connection = tuple[str, int]


class NtlmAcceptor:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.user_file = store.path.with_name(store.path.name + ".ntlm-users")
        self._pending: OrderedDict[Connection, Any] = OrderedDict()
        self._authenticated: OrderedDict[Connection, str] = OrderedDict()
        self._lock = threading.Lock()

    def user_of(self, connection: Connection) -> str | None:
        with self._lock:
            return self._authenticated.get(connection)

    def step(self, connection: Connection, header_value: str) -> tuple[str | None, str | None]:
        """(challenge to send with a 401, or None; the authenticated username, or None)."""
        try:
            token = base64.b64decode(header_value.split(" ", 1)[1])
        except (IndexError, binascii.Error):
            return None, None
        message_type = token[8:9]
        if message_type == b"\x01":
            try:
                with self._users_file():
                    context = spnego.server(protocol="ntlm")
                    challenge = context.step(token)
            except spnego.exceptions.SpnegoError:
                return None, None
            with self._lock:
                self._pending[connection] = context
                while len(self._pending) > _MAX_CONNECTIONS:
                    self._pending.popitem(last=False)
            return base64.b64encode(challenge or b"").decode(), None
        if message_type == b"\x03":
            with self._lock:
                context = self._pending.pop(connection, None)
            if context is None:
                return None, None
            try:
                with self._users_file():
                    context.step(token)
            except spnego.exceptions.SpnegoError:
                return None, None
            principal = str(context.client_principal or "")
            username = principal.split("\\")[-1].lower()
            with self._lock:
                self._authenticated[connection] = username
                while len(self._authenticated) > _MAX_CONNECTIONS:
                    self._authenticated.popitem(last=False)
            return None, username
        return None, None

    @contextmanager
    def _users_file(self) -> Iterator[None]:
        """pyspnego's acceptor reads credentials from the file NTLM_USER_FILE names (when the
        context is made and when it checks a Type 3): point it at this emulator's users."""
        with _ENV_LOCK:
            # Heimdal format ":USER:PASSWORD" (no domain): users sign in with their address.
            lines = [f":{user}:{password}" for user, password in self.store.passwords()]
            self.user_file.write_text("\n".join(lines) + "\n")
            self.user_file.chmod(0o600)
            previous = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(self.user_file)
            try:
                yield
            finally:
                if previous is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = previous
