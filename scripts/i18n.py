"""Message catalogs: one per feature, kept next to its code (labsys/<feature>/translations).

    python scripts/i18n.py extract   # pull messages from code and templates, update en + zh_CN
    python scripts/i18n.py compile   # .po -> .mo for every catalog (make run / make test do it)
    python scripts/i18n.py check     # list untranslated or fuzzy messages; exit 1 if any

The core catalog (labsys/translations) covers labsys/*.py, the audit/auth/main/documents
packages and the shared templates; a feature catalog covers labsys/<feature> and
templates/<feature>."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "labsys"
TEMPLATES = ROOT / "templates"
LOCALES = ["en", "zh_Hans_CN"]  # Babel names Simplified Chinese (China) zh_Hans_CN
CORE_PACKAGES = {"audit", "auth", "main", "documents"}
PYBABEL = [sys.executable, "-m", "babel.messages.frontend"]


def catalogs() -> list[tuple[Path, list[Path]]]:
    """(translations directory, source paths) for the core and every feature package."""
    features = sorted(p for p in PACKAGE.iterdir()
                      if p.is_dir() and (p / "__init__.py").exists() and p.name not in CORE_PACKAGES
                      and p.name != "translations")
    core_sources = [p for p in PACKAGE.glob("*.py")] + [PACKAGE / name for name in sorted(CORE_PACKAGES) if (PACKAGE / name).exists()]
    core_sources += [p for p in TEMPLATES.glob("*.html")]
    core_sources += [TEMPLATES / f for f in ("errors", "auth", "audit", "main", "admin") if (TEMPLATES / f).exists()]
    result = [(PACKAGE / "translations", core_sources)]
    for feature in features:
        sources = [feature] + ([TEMPLATES / feature.name] if (TEMPLATES / feature.name).exists() else [])
        result.append((feature / "translations", sources))
    return result


def extract() -> None:
    for directory, sources in catalogs():
        directory.mkdir(parents=True, exist_ok=True)
        pot = directory / "messages.pot"
        with tempfile.TemporaryDirectory() as scratch:
            cfg = ROOT / "babel.cfg"
            subprocess.run([*PYBABEL, "extract", "-F", str(cfg), "-k", "_l", "-k", "lazy_gettext",
                            "--no-location", "--sort-output", "--omit-header", "-o", str(pot),
                            *[str(s.relative_to(ROOT)) for s in sources]], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
        legacy = directory / "zh_CN"  # an earlier name of the Simplified Chinese catalog
        if legacy.exists() and not (directory / "zh_Hans_CN").exists():
            legacy.rename(directory / "zh_Hans_CN")
        for locale in LOCALES:
            with pot.open("rb") as handle:
                template = read_po(handle)
            po_path = directory / locale / "LC_MESSAGES" / "messages.po"
            po_path.parent.mkdir(parents=True, exist_ok=True)
            if po_path.exists():
                with po_path.open("rb") as handle:
                    catalog = read_po(handle, locale=locale)
            else:
                from babel.messages.catalog import Catalog
                catalog = Catalog(locale=locale, project="labsys")
            catalog.update(template, no_fuzzy_matching=True)
            catalog.fuzzy = False
            if locale == "en":
                for message in catalog:
                    if message.id and not message.string:
                        message.string = message.id
            with po_path.open("wb") as handle:
                write_po(handle, catalog, omit_header=False, sort_output=True, ignore_obsolete=True,
                         include_lineno=False)
        print(f"extracted {len(template)} messages into {directory.relative_to(ROOT)}")


def compile_all() -> None:
    for directory, _ in catalogs():
        if (directory).exists():
            subprocess.run([*PYBABEL, "compile", "-d", str(directory), "--statistics"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def untranslated() -> list[str]:
    problems = []
    for directory, _ in catalogs():
        for po_path in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
            with po_path.open("rb") as handle:
                catalog = read_po(handle)
            for message in catalog:
                if not message.id:
                    continue
                strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
                if message.fuzzy or not all(strings):
                    problems.append(f"{po_path.relative_to(ROOT)}: {message.id!r}")
    return problems


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "compile"
    if command == "extract":
        extract()
    elif command == "compile":
        compile_all()
    elif command == "check":
        problems = untranslated()
        print("\n".join(problems) or "all messages translated")
        sys.exit(1 if problems else 0)
    else:
        sys.exit(__doc__)
