"""Every PDF the application produces reads in English and in Simplified Chinese.

Each PDF is fetched through its route (on the demo data, both engines) by a user whose language
is English, then by the same user switched to Chinese; the text layer (pdftotext) must hold a
label of that template in the user's language — the Chinese taken from the catalogs — and not
the other language's. The Chinese PDF is set in the embedded CJK font alone (pdffonts), as it
always was; the English one in the embedded Latin font, with the CJK font as the fallback for
any Chinese in the data (test_an_english_pdf_prints_chinese_data_in_the_cjk_font)."""
from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from pathlib import Path

from babel.messages.pofile import read_po
from sqlalchemy import select

from tests.conftest import load_all_demo_data

PACKAGE = Path(__file__).resolve().parents[2] / "labsys"


@lru_cache(maxsize=None)
def chinese_catalog() -> dict[str, str]:
    """msgid -> msgstr of every feature's zh_Hans_CN catalog (Flask-Babel merges them)."""
    merged: dict[str, str] = {}
    for path in sorted(PACKAGE.glob("**/translations/zh_Hans_CN/LC_MESSAGES/messages.po")):
        with path.open("rb") as handle:
            for message in read_po(handle):
                if message.id and isinstance(message.id, str) and message.string:
                    merged.setdefault(message.id, message.string)
    return merged


def chinese(msgid: str) -> str:
    translation = chinese_catalog().get(msgid)
    assert translation, f"no Chinese translation of {msgid!r} in the catalogs"
    return translation


def squeeze(text: str) -> str:
    """Text without whitespace: pdftotext breaks lines where the PDF wraps them."""
    return re.sub(r"\s+", "", text)


def pdf_facts(pdf: bytes, path: Path) -> tuple[str, str]:
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, check=True).stdout
    return text, fonts


# (document, role that may fetch it, English label printed on it)
DOCUMENTS = [
    ("batch record", "qa", "Donor and cord"),
    ("vial label sheet", "technician", "For clinical trial use only"),
    ("box label", "technician", "Box"),
    ("certificate of analysis", "qa", "Certificate of analysis"),
    ("wristband", "pharmacist", "Clinical trial participant — scan before dispensing and administration"),
    ("chain-of-custody certificate", "pharmacist", "Chain-of-custody certificate"),
    ("accountability report", "pharmacist", "Product accountability"),
]


def fetchers(db):
    """document -> function(client) returning the response of its route, on the demo data."""
    from labsys.batches.models import Box
    from labsys.chain_of_custody.demo import DONOR_CODE
    from labsys.chain_of_custody.models import Dispensing
    from labsys.batches.models import Batch, Cord, Donor

    lot = db.session.scalar(select(Batch).join(Cord, Batch.cord_id == Cord.id).join(Donor, Cord.donor_id == Donor.id)
                            .where(Donor.code == DONOR_CODE))
    dispensing = db.session.scalar(select(Dispensing).order_by(Dispensing.id))
    box = db.session.scalar(select(Box).order_by(Box.id))
    assert lot is not None and dispensing is not None and box is not None, "the demo data has changed"
    lot_id, dispensing_id, patient_id, box_id = lot.id, dispensing.id, dispensing.patient_id, box.id

    def post(url: str, page: str):
        # Label prints are counted; after the first, a reprint states its reason.
        return lambda client: client.post_form(url, {"reason": "language check"}, token_from=page)

    return {
        "batch record": lambda client: client.get(f"/batches/{lot_id}/record.pdf"),
        "vial label sheet": post(f"/batches/{lot_id}/labels.pdf", f"/batches/{lot_id}"),
        "box label": post(f"/batches/boxes/{box_id}/label.pdf", f"/batches/boxes/{box_id}"),
        "certificate of analysis": lambda client: client.get(f"/release/lots/{lot_id}/certificate.pdf"),
        "wristband": lambda client: client.get(f"/pharmacy/patients/{patient_id}/wristband.pdf"),
        "chain-of-custody certificate": lambda client: client.get(f"/pharmacy/dispensings/{dispensing_id}/certificate.pdf"),
        "accountability report": lambda client: client.get(f"/pharmacy/accountability/{lot_id}.pdf"),
    }


CJK_EMBEDDED = re.compile(r"^\S*Noto[- ](Sans|Serif)[- ]CJK\S*\s.*\byes\b", re.M)
LATIN_EMBEDDED = re.compile(r"^\S*Liberation[- ]Sans\S*\s.*\byes\b", re.M)


def test_every_pdf_reads_in_english_and_in_chinese_with_its_font_embedded(app, db, login_as, tmp_path):
    load_all_demo_data(app)
    fetch = fetchers(db)
    assert set(fetch) == {name for name, _, _ in DOCUMENTS}
    clients = {}
    problems = []
    for name, role, english in DOCUMENTS:
        zh = chinese(english)
        for locale in ("en", "zh_CN"):
            # The language is the user's (kept on the account), so switch it before every fetch.
            client = clients.get(role) or clients.setdefault(role, login_as(role))
            client.post_form("/account/language", {"locale": locale, "next": "/"}, token_from="/")
            response = fetch[name](client)
            if response.status_code != 200 or response.mimetype != "application/pdf":
                problems.append(f"{name} ({locale}): HTTP {response.status_code} {response.mimetype}")
                continue
            text, fonts = pdf_facts(response.data, tmp_path / f"{name}-{locale}.pdf".replace(" ", "-"))
            wanted, unwanted = (english, zh) if locale == "en" else (zh, english)
            if squeeze(wanted) not in squeeze(text):
                problems.append(f"{name} ({locale}): {wanted!r} is not in the text layer")
            if squeeze(unwanted) in squeeze(text):
                problems.append(f"{name} ({locale}): {unwanted!r} is in the text layer")
            if locale == "zh_CN" and not CJK_EMBEDDED.search(fonts):
                problems.append(f"{name} ({locale}): no embedded Noto CJK font:\n{fonts}")
            if locale == "zh_CN" and "Liberation" in fonts:
                problems.append(f"{name} ({locale}): Chinese PDF set partly in the Latin font:\n{fonts}")
            if locale == "en" and not LATIN_EMBEDDED.search(fonts):
                problems.append(f"{name} ({locale}): no embedded Latin font:\n{fonts}")
    assert not problems, "\n".join(problems)


def test_an_english_pdf_prints_chinese_data_in_the_cjk_font(app, tmp_path):
    """The English font stack puts the CJK font after the Latin one: Chinese in the data (a name, a
    comment) is set in it, embedded, and reads back from the text layer."""
    from labsys.documents.pdf import html_to_pdf

    with app.test_request_context():
        pdf = html_to_pdf('<html lang="en"><body><p>Comment: 王芳 复核 <b>合格</b></p></body></html>')
    text, fonts = pdf_facts(pdf, tmp_path / "mixed.pdf")
    assert "王芳复核合格" in squeeze(text)
    assert CJK_EMBEDDED.search(fonts) and LATIN_EMBEDDED.search(fonts), fonts
