"""Documents into passages: text extraction per type, bad files refused with a reason, splitting."""

from __future__ import annotations

import io

import pytest

from agentic.knowledge.extract import Section, Unusable, extract
from agentic.knowledge.split import split_sections

pytestmark = pytest.mark.unit


def test_markdown_splits_at_headings_but_not_inside_code_fences():
    md = "Intro line.\n\n# Deploy\nRun it.\n\n```sh\n# not a heading\n```\n## Rollback ##\nUndo it.\n"
    sections = extract("runbook.md", md.encode())
    assert [s.heading for s in sections] == ["", "Deploy", "Rollback"]
    assert "# not a heading" in sections[1].text
    assert sections[2].text.strip() == "Undo it."


def test_plain_text_is_one_section_without_heading():
    assert extract("notes.txt", "\ufeffone\n\ntwo".encode()) == [Section("", "one\n\ntwo")]


def test_html_text_keeps_headings_and_paragraphs_and_drops_scripts():
    html = (
        "<html><head><title>T</title><style>p{}</style><script>var x = 'secret';</script></head><body>"
        "<p>Before &amp; after.</p><h2>On   call</h2><p>Page the <b>owner</b>.</p><ul><li>one</li><li>two</li></ul>"
        "</body></html>"
    )
    sections = extract("page.html", html.encode())
    assert [s.heading for s in sections] == ["", "On call"]
    assert "Before & after." in sections[0].text
    assert "secret" not in " ".join(s.text for s in sections)
    assert sections[1].text.split("\n\n") == ["Page the owner.", "one", "two"]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8 text"),
        ("empty.md", b"   \n\n", "no text"),
        ("archive.zip", b"PK", "not a document type"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "unreadable PDF"),
    ],
)
def test_bad_files_are_refused_with_their_reason(name, data, reason):
    with pytest.raises(Unusable, match=reason):
        extract(name, data)


def test_pdf_text_is_extracted_per_page():
    pdf = _pdf_with_text(["Rotate the signing keys every ninety days.", "Second page text."])
    sections = extract("keys.pdf", pdf)
    assert [s.heading for s in sections] == ["page 1", "page 2"]
    assert "signing keys" in sections[0].text


def test_passages_hold_a_few_hundred_words_and_never_cross_a_heading():
    paragraph = " ".join(["word"] * 90) + "."
    sections = [Section("A", "\n\n".join([paragraph] * 7)), Section("B", "short")]
    chunks = split_sections(sections, words=200)
    assert [c.heading for c in chunks][-1] == "B"
    sizes = [len(c.text.split()) for c in chunks if c.heading == "A"]
    assert sum(sizes) == 630
    assert all(150 <= n <= 300 for n in sizes[:-1])


def test_a_long_paragraph_is_cut_at_sentence_ends():
    sentence = " ".join(["alpha"] * 49) + " end."
    chunks = split_sections([Section("", " ".join([sentence] * 10))], words=200)
    assert len(chunks) >= 2
    assert all(c.text.endswith("end.") for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) == 500


def _pdf_with_text(pages: list[str]) -> bytes:
    """A minimal PDF with one line of text per page, built with pypdf's own objects."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=300, height=200)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
        )
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 10 Tf 10 100 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
