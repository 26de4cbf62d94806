"""Signature blocks of plain-text mail: who wrote it, for which company, title and phone.

Heuristics tuned on real list mail (tests/data): the block after the RFC 3676 `-- ` line,
else the lines after a closing phrase; mailing-list footers and quoted text are not signature.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Signature", "parse_signature"]

# RFC 3676: dash dash space. A bare "--" is what list managers put before their footer.
_DELIMITER = re.compile(r"^-- $")
_CLOSING = re.compile(
    r"^(thanks|thank you|regards|best regards|kind regards|best|cheers|sincerely)\b[ ,!.]*$",
    re.IGNORECASE,
)
# Mailing-list managers append these after the writer's own signature.
_FOOTER = re.compile(r"unsubscribe|majordomo|mailing list|^_{5,}|^-{5,}", re.IGNORECASE)
_URL = re.compile(r"(?:https?://|www\.)[^\s<>]+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\(?\d[\d\s().\-/]{5,}\d")
_PHONE_LABEL = re.compile(
    r"\b(?:p|t|m|ph|phone|tel|telephone|mobile|cell|fax)\s*[:.]\s*", re.IGNORECASE
)
_TITLE_WORDS = re.compile(
    r"\b(manager|engineer|developer|director|maintainer|president|officer|ceo|cto|cfo|coo|"
    r"vp|architect|consultant|head|analyst|founder|specialist|executive|representative|"
    r"administrator|programmer|scientist|lead|partner|sales|account manager|researcher)\b",
    re.IGNORECASE,
)
# A legal form names the company itself; organisation words ("SUSE Labs") may name a part.
_LEGAL_FORM = re.compile(
    r"\b(inc|ltd|llc|llp|gmbh|ag|corp|corporation|plc|s\.a|s\.r\.l|b\.v|oy|limited)\b\.?",
    re.IGNORECASE,
)
_ORGANISATION_WORD = re.compile(
    r"\b(labs|group|technologies|systems|software|solutions|consulting)\b", re.IGNORECASE
)
_NAME_WORD = re.compile(r"(?:[A-Z][a-zA-Z'\-]+\.?|de|van|von|der|da|di|le|la)")
_SIGNATURE_LINES = 12


@dataclass(frozen=True)
class Signature:
    name: str = ""
    title: str = ""
    company: str = ""
    phone: str = ""
    emails: tuple[str, ...] = ()
    websites: tuple[str, ...] = ()
    lines: tuple[str, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return bool(self.name or self.title or self.company or self.phone or self.emails)


def _block(body: str) -> list[str]:
    # Not rstripped yet: the delimiter's trailing space is what tells it from a footer's "--".
    lines = body.replace("\r\n", "\n").split("\n")
    unquoted = [(i, line) for i, line in enumerate(lines) if not line.lstrip().startswith(">")]
    start = None
    for i, line in unquoted:
        if _DELIMITER.match(line):
            start = i + 1
            # The writer's signature is the first delimiter after the last quote; a later
            # "--" is a list footer, handled below.
            break
    if start is None:
        for i, line in reversed(unquoted):
            if _CLOSING.match(line.strip()):
                start = i + 1
                break
    if start is None:
        return []
    block: list[str] = []
    for line in lines[start:]:
        if line.strip() == "--" or _FOOTER.search(line):
            break
        if line.lstrip().startswith(">"):
            continue
        if line.strip():
            block.append(line.strip())
        if len(block) >= _SIGNATURE_LINES:
            break
    return block


def _segments(line: str) -> list[str]:
    return [s.strip(" .") for s in re.split(r"\s*[,|]\s*|\s+at\s+|\s+-\s+", line) if s.strip()]


def _looks_like_name(text: str) -> bool:
    words = text.split()
    if not 2 <= len(words) <= 4 or any(ch.isdigit() for ch in text) or "@" in text:
        return False
    if not all(_NAME_WORD.fullmatch(w) for w in words):
        return False
    return words[0][0].isupper() and words[-1][0].isupper() and not _TITLE_WORDS.search(text)


def parse_signature(body: str, display_name: str = "") -> Signature:
    block = _block(body)
    name = title = phone = ""
    companies: list[tuple[int, str]] = []
    emails: list[str] = []
    websites: list[str] = []
    wanted = display_name.strip().lower()
    previous_was_title = False
    for line in block:
        emails += [e.lower() for e in _EMAIL.findall(line)]
        websites += [u.rstrip(".,)") for u in _URL.findall(line)]
        text = _EMAIL.sub("", _URL.sub("", line)).strip(" <>()|,:-")
        if not phone:
            phone = _phone(text)
            if phone and _PHONE_LABEL.search(text):
                previous_was_title = False
                continue
        segments = _segments(text)
        is_title_line = False
        for index, segment in enumerate(segments):
            if not name and _looks_like_name(segment) and (not wanted or segment.lower() == wanted):
                name = segment
            elif not title and _TITLE_WORDS.search(segment) and len(segment.split()) <= 6:
                title = segment
                is_title_line = True
            elif len(segment.split()) <= 5 and _LEGAL_FORM.search(segment):
                companies.append((0, segment))
            elif len(segment.split()) <= 5 and _ORGANISATION_WORD.search(segment):
                companies.append((1, segment))
            elif (is_title_line or (previous_was_title and index == 0)) and _short_proper(segment):
                # "Developer at Freescale", or "Manager" then "Oracle" on the next line.
                companies.append((2, segment))
        previous_was_title = is_title_line
    company = min(companies, key=lambda c: c[0])[1] if companies else ""
    if not name and display_name and any(display_name.lower() in line.lower() for line in block):
        name = display_name.strip()
    return Signature(
        name=name,
        title=title,
        company=company,
        phone=phone,
        emails=tuple(dict.fromkeys(emails)),
        websites=tuple(dict.fromkeys(websites)),
        lines=tuple(block),
    )


def _phone(text: str) -> str:
    labelled = _PHONE_LABEL.search(text)
    for candidate in _PHONE.findall(text[labelled.end() :] if labelled else text):
        digits = sum(ch.isdigit() for ch in candidate)
        # Versions (1.6.5.3) and dates are digits with dots or dashes only.
        if digits >= 7 and (labelled or re.search(r"[\s()+]", candidate)):
            return str(candidate).strip()
    return ""


def _short_proper(segment: str) -> bool:
    words = segment.split()
    return 1 <= len(words) <= 3 and segment[:1].isupper() and not any(c.isdigit() for c in segment)
