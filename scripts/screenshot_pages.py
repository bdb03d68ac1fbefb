"""Screenshot every HTML page as each demo role, in English and Chinese, at desk and tablet width.

Serves a fresh app (temporary SQLite database with every feature's demo data) and walks every
GET route with Playwright in Debian's Chromium, one URL per endpoint (the first example values),
saving PNGs to test-artifacts/pages/<role>/<locale>-<width>/<endpoint>.png. It also prints, for
each page, the problems a reviewer looks for first: horizontal scroll, number of h1, empty title,
and the height of the top navigation.

    /work/main/.venv/bin/python scripts/screenshot_pages.py [--roles qa,technician] [--widths 1280,768]
        [--locales en,zh_CN] [--only batches.,release.] [--no-png]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from werkzeug.serving import make_server  # noqa: E402

from labsys import create_app  # noqa: E402
from labsys.extensions import db  # noqa: E402
from tests.conftest import DEMO_PASSWORD, _config, load_all_demo_data  # noqa: E402

ROLES = ["technician", "qa", "pharmacist", "investigator", "admin"]
HEIGHTS = {1280: 860, 768: 1024}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOT_PAGES = (".pdf", ".png", ".csv", ".json", ".svg", ".zip", ".txt")


def one_url_per_endpoint(app) -> dict[str, str]:
    from flask import url_for

    from labsys.navigation import route_examples

    urls: dict[str, str] = {}
    with app.test_request_context():
        values = route_examples(app)
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint == "static" or rule.rule.startswith("/api/"):
                continue
            try:
                url = url_for(rule.endpoint, **{a: values[a][0] for a in rule.arguments})
            except (KeyError, IndexError):
                continue
            if not url.endswith(NOT_PAGES) and "/export" not in url and "/logout" not in url:
                urls[rule.endpoint] = url
    return urls


def serve(database: Path):
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app(_config(f"sqlite:///{database}"))
    with app.app_context():
        db.create_all()
        load_all_demo_data(app)
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server


PAGE_FACTS = """() => ({
  scroll: document.documentElement.scrollWidth - window.innerWidth,
  h1: document.querySelectorAll('h1').length,
  title: document.title,
  nav: (document.querySelector('.mainnav') || {offsetHeight: 0}).offsetHeight,
})"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--widths", default="1280,768")
    parser.add_argument("--locales", default="en,zh_CN")
    parser.add_argument("--only", default="", help="comma-separated endpoint prefixes")
    parser.add_argument("--out", default=str(ROOT / "test-artifacts" / "pages"))
    parser.add_argument("--no-png", action="store_true", help="only print the page facts")
    args = parser.parse_args()
    out = Path(args.out)
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        app, server = serve(Path(tmp) / "pages.db")
        base = f"http://127.0.0.1:{server.server_port}"
        urls = one_url_per_endpoint(app)
        only = tuple(p for p in args.only.split(",") if p)
        if only:
            urls = {e: u for e, u in urls.items() if e.startswith(only)}
        problems = 0
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for role in args.roles.split(","):
                for locale in args.locales.split(","):
                    for width in (int(w) for w in args.widths.split(",")):
                        context = browser.new_context(viewport={"width": width, "height": HEIGHTS.get(width, 900)})
                        page = context.new_page()
                        page.goto(f"{base}/login")
                        page.fill("#username", role)
                        page.fill("#password", DEMO_PASSWORD)
                        page.click("button[type=submit].primary")
                        page.wait_for_load_state()
                        page.click(f".lang-switch button[value={locale}]")
                        page.wait_for_load_state()
                        folder = out / role / f"{locale}-{width}"
                        folder.mkdir(parents=True, exist_ok=True)
                        for endpoint, url in sorted(urls.items()):
                            try:
                                response = page.goto(base + url)
                            except PlaywrightError:  # a download (attachment), not a page
                                continue
                            if response is None or response.status != 200 or \
                                    "text/html" not in response.headers.get("content-type", ""):
                                continue
                            facts = page.evaluate(PAGE_FACTS)
                            flags = []
                            if facts["scroll"] > 0:
                                flags.append(f"scrolls {facts['scroll']}px")
                            if facts["h1"] != 1:
                                flags.append(f"{facts['h1']} h1")
                            if not facts["title"].split("·")[0].strip():
                                flags.append("no title")
                            if width >= 1280 and facts["nav"] > 40:
                                flags.append(f"nav {facts['nav']}px high")
                            problems += bool(flags)
                            print(f"{role:12} {locale:5} {width:4} {endpoint:40} {url:50} {'; '.join(flags)}")
                            if not args.no_png:
                                page.screenshot(path=str(folder / f"{endpoint}.png"), full_page=True)
                        context.close()
            browser.close()
        server.shutdown()
    print(f"{problems} page views with problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
