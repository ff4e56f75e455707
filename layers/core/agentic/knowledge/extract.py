"""Text and its sections from a document's bytes: Markdown, plain text, HTML and (with pypdf) PDF.

A file that cannot be a document raises ``Unusable`` with the reason that GET /knowledge lists.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath

SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
#: A NUL byte in the first block means binary content, as git and grep decide.
_SNIFF_BYTES = 8192
_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


class Unusable(Exception):
    """The document is skipped; ``str(exc)`` says why."""


@dataclass(frozen=True)
class Section:
    heading: str
    text: str


def is_document(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in SUFFIXES


def extract(name: str, data: bytes) -> list[Section]:
    """The document's sections (heading, text), in order; ``Unusable`` when it has none."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise Unusable(f"not a document type ({', '.join(sorted(SUFFIXES))})")
    if suffix == ".pdf":
        sections = _pdf_sections(data)
    else:
        text = _decode(data)
        sections = _html_sections(text) if suffix in (".html", ".htm") else _markdown_sections(text)
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise Unusable("no text")
    return sections


def _decode(data: bytes) -> str:
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise Unusable("binary content")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unusable(f"not UTF-8 text (byte {exc.start})") from None


def _markdown_sections(text: str) -> list[Section]:
    """Sections split at ATX headings (``#`` ... ``######``), ignoring ``#`` lines in code fences.
    Plain text has no headings: one section with an empty heading."""
    sections: list[Section] = []
    heading, fenced = "", False
    lines: list[str] = []
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _MD_HEADING.match(line)):
            sections.append(Section(heading, "\n".join(lines)))
            heading, lines = m[2], []
            continue
        lines.append(line)
    sections.append(Section(heading, "\n".join(lines)))
    return sections


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    _HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
    _BLOCKS = frozenset(
        {"p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "pre", "blockquote", "dd", "dt"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self._heading = ""
        self._parts: list[str] = []
        self._in_heading: list[str] | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._HEADINGS:
            self._close_section()
            self._in_heading = []
        elif tag in self._BLOCKS:
            self._parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._HEADINGS and self._in_heading is not None:
            self._heading = " ".join("".join(self._in_heading).split())
            self._in_heading = None
        elif tag in self._BLOCKS:
            self._parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_heading is not None:
            self._in_heading.append(data)
        else:
            self._parts.append(data)

    def _close_section(self) -> None:
        paragraphs = ("".join(self._parts)).split("\n\n")
        text = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
        self.sections.append(Section(self._heading, text))
        self._parts = []

    def finish(self) -> list[Section]:
        self.close()
        self._close_section()
        return self.sections


def _html_sections(text: str) -> list[Section]:
    parser = _HtmlText()
    parser.feed(text)
    return parser.finish()


def _pdf_sections(data: bytes) -> list[Section]:
    """One section per page ("page N"); pypdf is pure Python, so the Lambda layer ships it as is."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Unusable("encrypted PDF")
        return [Section(f"page {n}", page.extract_text() or "") for n, page in enumerate(reader.pages, 1)]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise Unusable(f"unreadable PDF: {exc}") from None
