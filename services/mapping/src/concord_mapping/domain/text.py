"""Text transforms that can lose information, each reporting what it lost."""

from __future__ import annotations

# inscriptis ships no type information; the two names used here are typed at the call.
from inscriptis import get_text  # type: ignore[import-untyped]
from inscriptis.model.config import ParserConfig  # type: ignore[import-untyped]

__all__ = ["html_to_text", "truncate"]

# Links as `text [url]`-style Markdown keep the target readable in a plain-text field.
_HTML_CONFIG = ParserConfig(display_links=True, display_anchors=False)


def html_to_text(html: str) -> str:
    """Readable text: paragraphs, lists, tables and link targets survive; markup does not."""
    if not html.strip():
        return ""
    text: str = get_text(html, _HTML_CONFIG)
    return text.strip("\n")


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters, cut at a character boundary (never inside a surrogate pair)."""
    if limit <= 0 or len(text) <= limit:
        return text, False
    return text[:limit], True
