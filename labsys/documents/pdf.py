"""PDF documents from Jinja templates with WeasyPrint, with an embedded CJK font so the
Chinese interface prints as well as the English one.

Fonts: a Chinese document (``lang="zh-Hans"``, from templates/documents/_pdf_base.html) is set in
Noto Sans CJK SC, Latin included, as it always was. An English one is set in Liberation Sans (Debian
fonts-liberation; it has every sign the documents print: → ≤ − ± × ° ·) with the CJK font next in
the list, so Chinese in the data (a name, a comment) still prints in it. WeasyPrint embeds only
the fonts a document uses; for each it reads the whole font file and subsets it, and the CJK
collections are 20 MB of CFF outlines: a third of an English custody certificate's PDF writing
(write_pdf 0.23 → 0.08 s CPU) and a fifth of the label sheet's. The Latin stack sets its line
height (1.4) close to the CJK font's ``normal`` (1.45), so pages keep their rhythm."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from flask import current_app, render_template

CJK_FONT_FAMILY = "Noto Sans CJK SC"
# Debian/Ubuntu fonts-noto-cjk; WeasyPrint finds it through fontconfig and embeds the subset used.
CJK_FONT_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
)

LATIN_FONT_FAMILY = "Liberation Sans"  # Debian fonts-liberation (Makefile RUN_DEBS)

BASE_CSS = f"""
@page {{ size: A4; margin: 14mm 12mm; }}
html {{ font-family: "{LATIN_FONT_FAMILY}", "{CJK_FONT_FAMILY}", "Noto Sans CJK", sans-serif; font-size: 9.5pt;
        line-height: 1.4; color: #111; }}
html:lang(zh) {{ font-family: "{CJK_FONT_FAMILY}", "Noto Sans CJK", sans-serif; line-height: normal; }}
img.qr {{ image-rendering: pixelated; }}
"""


def cjk_font_available() -> bool:
    return any(path.exists() for path in CJK_FONT_FILES)


def html_to_pdf(html: str, base_url: str | None = None, extra_css: str = "") -> bytes:
    """The PDF of ``html`` with BASE_CSS (and ``extra_css``) as user stylesheets.

    Python's cyclic garbage collector is paused while WeasyPrint runs. WeasyPrint allocates
    millions of small objects per document, which sets off full collections, and each one walks
    every object of the application process (about 0.2 s each with the demo data loaded: a third
    of the custody certificate's time in some runs). Reference counting still frees almost
    everything as it goes; the collector is switched back on (if it was on) when the PDF is made
    and then runs as usual. Pausing is process-wide, so with threads another render may switch
    it back on early: that costs time, never correctness."""
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    collecting = gc.isenabled()
    gc.disable()
    try:
        fonts = FontConfiguration()
        stylesheets = [CSS(string=BASE_CSS + extra_css, font_config=fonts)]
        return HTML(string=html, base_url=base_url or str(Path(current_app.root_path).parent)).write_pdf(
            stylesheets=stylesheets, font_config=fonts)
    finally:
        if collecting:
            gc.enable()


def render_pdf(template: str, extra_css: str = "", **context: Any) -> bytes:
    """Render ``template`` (under templates/) with ``context`` and return the PDF bytes."""
    html = render_template(template, **context)
    return html_to_pdf(html, extra_css=extra_css)
