"""PDFs built in the tests (fpdf2): pages of text, an empty one, a scan, an encrypted one."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from PIL import Image


def text_pdf(path: Path, pages: list[str]) -> Path:
    """A PDF with one page per item of ``pages`` (paragraphs separated by blank lines)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def empty_pdf(path: Path) -> Path:
    """A PDF with a blank page."""
    pdf = FPDF()
    pdf.add_page()
    pdf.output(str(path))
    return path


def scanned_pdf(path: Path) -> Path:
    """A PDF whose two pages are only images (what a scanner makes)."""
    image = Image.new("RGB", (200, 280), "white")
    for x in range(20, 180):
        for y in range(40, 44):
            image.putpixel((x, y), (0, 0, 0))  # a "line of text", as pixels
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(image, x=10, y=10, w=100)
    pdf.output(str(path))
    return path


def encrypted_pdf(path: Path) -> Path:
    """A PDF that needs a password to open."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, "The secret plans.")
    pdf.set_encryption(owner_password="owner", user_password="user")
    pdf.output(str(path))
    return path
