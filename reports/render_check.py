"""Check that capacity-planning reports render: every figure embedded, decodable and shown.

Usage (from the repository root):

    .venv/bin/python reports/render_check.py REPORT [REPORT ...]

where REPORT is a `simulate plan` output directory or its index.html. For each report:

1. Always, without a browser: index.html is parsed and every <img> must carry a
   `data:image/png;base64,` URI that decodes to a valid PNG (signature, then decoded with
   matplotlib); nothing may be fetched from elsewhere (no external src/href, no <script>,
   <link> or <iframe>), since the page is meant to be mailed on its own.
2. When a Chromium is found (`find_browser`): the page is loaded headless with a probe script
   added to a temporary copy, which lists the images the browser failed to decode, and a
   full-page screenshot (1280×4000) is written beside the report as screenshot.png for a person
   to look at.

The browser, first found first used:

- the `CHROME`, then `CHROMIUM_PATH` environment variable: a path or a command name;
- on the PATH: `chromium`, `chromium-browser`, `google-chrome`, `google-chrome-stable`,
  `chrome`, `chromium-headless-shell`, `headless_shell` (on Debian `apt-get install -y
  chromium`; `apt-get install -y chromium-headless-shell` for the shell alone);
- Playwright's downloads (`npx playwright install chromium`), newest first, in
  `$PLAYWRIGHT_BROWSERS_PATH` or `~/.cache/ms-playwright` (`~/Library/Caches/ms-playwright` on
  macOS): `chromium_headless_shell-*/chrome-linux/headless_shell` (and the newer
  `chrome-headless-shell-linux64/chrome-headless-shell`), `chromium-*/chrome-linux/chrome`,
  `chromium-*/chrome-linux64/chrome`, `chromium-*/chrome-mac/Chromium.app/...`;
- Puppeteer's (`npx @puppeteer/browsers install chrome`), newest first, in
  `~/.cache/puppeteer`: `chrome*/*/chrome-linux64/chrome`,
  `chrome-headless-shell/*/chrome-headless-shell-linux64/chrome-headless-shell`;
- macOS app bundles in /Applications and ~/Applications: Google Chrome, Chromium.

The flags work for a full Chrome or Chromium and for the headless shell alike: plain
`--headless` (the shell is headless by itself and has no "new" headless mode, so
`--headless=new` is not used), `--dump-dom`, `--screenshot`, `--window-size`,
`--virtual-time-budget` (checked with Debian's chromium and chromium-headless-shell 156).

Prints one line per report and every problem found; exits 1 when there is any problem, 0 otherwise.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
            "chromium-headless-shell", "headless_shell")
BROWSER_VARIABLES = ("CHROME", "CHROMIUM_PATH")
PLAYWRIGHT_BUILDS = ("chromium_headless_shell-*/chrome-linux/headless_shell",
                     "chromium_headless_shell-*/chrome-headless-shell-linux64/chrome-headless-shell",
                     "chromium-*/chrome-linux/chrome", "chromium-*/chrome-linux64/chrome",
                     "chromium_headless_shell-*/chrome-mac/headless_shell",
                     "chromium-*/chrome-mac/Chromium.app/Contents/MacOS/Chromium")
PUPPETEER_BUILDS = ("chrome*/*/chrome-linux64/chrome",
                    "chrome-headless-shell/*/chrome-headless-shell-linux64/chrome-headless-shell",
                    "chrome/*/chrome-mac-*/Google Chrome for Testing.app/Contents/MacOS/Google Chrome for Testing")
MAC_APPS = ("Google Chrome.app/Contents/MacOS/Google Chrome", "Chromium.app/Contents/MacOS/Chromium")
WINDOW = "1280,4000"
BROWSER_TIMEOUT_S = 120
# Added to a temporary copy of the page: once loaded, the browser records on <body> how many
# images there are and which did not decode; --dump-dom then prints those attributes.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.flatMap((img, i) => (img.complete && img.naturalWidth > 0 ? [] : [i]));
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", broken.join(","));
});
</script>"""


class _Page(HTMLParser):
    """The <img> sources, the other src/href references, the tag names and the <body> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str | None] = []
        self.references: list[str] = []
        self.tags: set[str] = set()
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attributes.get("src"))
        elif tag == "body":
            self.body = attributes
        self.references += [value or "" for key, value in attrs if key in ("src", "href") and tag != "img"]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _png_problem(src: str | None) -> str | None:
    """Why an <img> source is not an embedded, decodable PNG (None when it is)."""
    if not src:
        return "no src"
    if not src.startswith(DATA_PNG):
        return f"not an embedded PNG: {src[:60]}"
    try:
        data = base64.b64decode(src[len(DATA_PNG):], validate=True)
    except binascii.Error as error:
        return f"bad base64: {error}"
    if not data.startswith(PNG_SIGNATURE):
        return "data is not a PNG (bad signature)"
    import matplotlib.image

    try:
        matplotlib.image.imread(io.BytesIO(data), format="png")
    except Exception as error:  # any decoder failure is the finding, whatever its type
        return f"PNG does not decode: {error}"
    return None


def _is_external(reference: str) -> bool:
    parsed = urlparse(reference)
    return bool(parsed.scheme and parsed.scheme != "data") or reference.startswith("//")


def check_images(index_html: Path) -> list[str]:
    """Problems found by parsing: images missing or not embedded PNGs, and anything fetched from outside."""
    page = _parse(index_html.read_text(encoding="utf-8"))
    problems = [f"image {i}: {problem}" for i, src in enumerate(page.images)
                if (problem := _png_problem(src)) is not None]
    problems += [f"external reference: {ref}" for ref in page.references if _is_external(ref)]
    problems += [f"<{tag}> present: the page must not load or run anything" for tag in
                 sorted({"script", "link", "iframe"} & page.tags)]
    return problems


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _newest_first(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Executables matching `patterns` under `root`, the highest build numbers first."""
    def version(path: Path) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", str(path.relative_to(root)))]

    found = [path for pattern in patterns for path in root.glob(pattern) if _executable(path)]
    return sorted(found, key=version, reverse=True)


def find_browser(env: dict[str, str] | None = None, home: Path | None = None,
                 applications: tuple[Path, ...] = (Path("/Applications"),)) -> str | None:
    """The Chromium to render with (module docstring: the variables, the PATH, Playwright's and
    Puppeteer's downloads, macOS app bundles), or None. A variable naming nothing usable is
    reported on stderr and passed over."""
    env = dict(os.environ) if env is None else env
    home = Path.home() if home is None else home
    for variable in BROWSER_VARIABLES:
        value = env.get(variable)
        if not value:
            continue
        path = Path(value).expanduser()
        if _executable(path):
            return str(path)
        if (found := shutil.which(value, path=env.get("PATH"))) is not None:
            return found
        print(f"{variable}={value}: not an executable file or command; looking elsewhere", file=sys.stderr)
    for name in BROWSERS:
        if (found := shutil.which(name, path=env.get("PATH"))) is not None:
            return found
    playwright = [Path(env["PLAYWRIGHT_BROWSERS_PATH"])] if env.get("PLAYWRIGHT_BROWSERS_PATH") else []
    playwright += [home / ".cache" / "ms-playwright", home / "Library" / "Caches" / "ms-playwright"]
    candidates = [path for root in playwright for path in _newest_first(root, PLAYWRIGHT_BUILDS)]
    candidates += _newest_first(home / ".cache" / "puppeteer", PUPPETEER_BUILDS)
    candidates += [folder / app for folder in (*applications, home / "Applications") for app in MAC_APPS
                   if _executable(folder / app)]
    return str(candidates[0]) if candidates else None


def _run_browser(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)


def browser_check(browser: str, index_html: Path) -> list[str]:
    """Images the browser itself could not show, from a probed temporary copy of the page."""
    text = index_html.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>", 1)
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "index.html"
        probed.write_text(text, encoding="utf-8")
        result = _run_browser(browser, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    body = _parse(result.stdout).body
    if "data-images" not in body:
        return [f"browser produced no page (exit {result.returncode}): {result.stderr.strip()[-300:]}"]
    broken = [i for i in (body.get("data-broken") or "").split(",") if i]
    return [f"image {i}: the browser could not display it" for i in broken]


def screenshot(browser: str, index_html: Path) -> tuple[Path, list[str]]:
    """screenshot.png beside the report, and a problem when it is missing or blank."""
    target = index_html.with_name("screenshot.png")
    target.unlink(missing_ok=True)
    result = _run_browser(browser, f"--screenshot={target}", f"--window-size={WINDOW}", index_html.as_uri())
    if not target.is_file():
        return target, [f"no screenshot (exit {result.returncode}): {result.stderr.strip()[-300:]}"]
    import matplotlib.image

    pixels = matplotlib.image.imread(target)
    return target, [] if pixels.std() > 0 else ["the screenshot is blank"]


def check_report(report: Path, browser: str | None) -> list[str]:
    """Every problem with one report, printing what was checked."""
    index_html = (report / "index.html" if report.is_dir() else report).resolve()  # file:// URIs need it absolute
    if not index_html.is_file():
        return [f"{index_html}: no such file"]
    problems = check_images(index_html)
    images = len(_parse(index_html.read_text(encoding="utf-8")).images)
    done = f"{images} images parsed"
    if browser is not None:
        problems += browser_check(browser, index_html)
        shot, shot_problems = screenshot(browser, index_html)
        problems += shot_problems
        done += f", rendered in {Path(browser).name}, screenshot {shot}"
    else:
        done += "; no Chromium found (set CHROME to one), so not rendered"
    print(f"{'OK  ' if not problems else 'FAIL'} {index_html}: {done}")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    browser = find_browser()
    failed = False
    for report in map(Path, argv):
        problems = check_report(report, browser)
        for problem in problems:
            print(f"     {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
