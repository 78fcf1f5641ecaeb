"""reports/render_check.py finds a Chromium wherever the usual installers put one: the CHROME /
CHROMIUM_PATH override, the PATH, Playwright's and Puppeteer's downloads (newest first) and
macOS app bundles, in a fake tree; and its flags suit the headless shell too."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def render_check():
    spec = importlib.util.spec_from_file_location("render_check", REPO / "reports" / "render_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty home and PATH, and no override set."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for variable in ("CHROME", "CHROMIUM_PATH", "PLAYWRIGHT_BROWSERS_PATH"):
        monkeypatch.delenv(variable, raising=False)
    return home


def test_nothing_installed_finds_nothing(render_check, home, tmp_path):
    assert render_check.find_browser(applications=(tmp_path / "Applications",)) is None


def test_playwright_headless_shell_newest_first(render_check, home, tmp_path):
    cache = home / ".cache" / "ms-playwright"
    _executable(cache / "chromium_headless_shell-1148" / "chrome-linux" / "headless_shell")
    newest = _executable(cache / "chromium_headless_shell-1155" / "chrome-linux" / "headless_shell")
    (cache / "chromium_headless_shell-1160" / "chrome-linux").mkdir(parents=True)  # a download in progress
    assert render_check.find_browser(applications=()) == str(newest)


def test_playwright_chromium_and_its_own_folder(render_check, home, tmp_path, monkeypatch):
    chrome = _executable(home / ".cache" / "ms-playwright" / "chromium-1140" / "chrome-linux" / "chrome")
    assert render_check.find_browser(applications=()) == str(chrome)
    elsewhere = _executable(tmp_path / "pw" / "chromium-1200" / "chrome-linux64" / "chrome")
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "pw"))
    assert render_check.find_browser(applications=()) == str(elsewhere)


def test_puppeteer_cache(render_check, home):
    chrome = _executable(home / ".cache" / "puppeteer" / "chrome" / "linux-131.0.6778.85" / "chrome-linux64" / "chrome")
    _executable(home / ".cache" / "puppeteer" / "chrome" / "linux-120.0.6099.109" / "chrome-linux64" / "chrome")
    assert render_check.find_browser(applications=()) == str(chrome)


def test_macos_app_bundle(render_check, home, tmp_path):
    app = _executable(tmp_path / "Applications" / "Google Chrome.app" / "Contents" / "MacOS" / "Google Chrome")
    assert render_check.find_browser(applications=(tmp_path / "Applications",)) == str(app)
    own = _executable(home / "Applications" / "Chromium.app" / "Contents" / "MacOS" / "Chromium")
    assert render_check.find_browser(applications=()) == str(own)


def test_path_before_downloads_and_the_override_before_all(render_check, home, tmp_path, monkeypatch, capsys):
    _executable(home / ".cache" / "ms-playwright" / "chromium-1140" / "chrome-linux" / "chrome")
    shell = _executable(tmp_path / "bin" / "chromium-headless-shell")
    assert render_check.find_browser(applications=()) == str(shell)
    chosen = _executable(tmp_path / "opt" / "my-chrome")
    monkeypatch.setenv("CHROMIUM_PATH", str(chosen))
    assert render_check.find_browser(applications=()) == str(chosen)
    monkeypatch.setenv("CHROME", "headless_shell")  # a command name on the PATH
    named = _executable(tmp_path / "bin" / "headless_shell")
    assert render_check.find_browser(applications=()) == str(named)
    monkeypatch.setenv("CHROME", str(tmp_path / "missing"))
    assert render_check.find_browser(applications=()) == str(chosen)  # passed over, and said so
    assert "CHROME=" in capsys.readouterr().err


def test_flags_suit_the_headless_shell(render_check, monkeypatch):
    seen = []
    monkeypatch.setattr(render_check.subprocess, "run", lambda command, **kwargs: seen.append(command))
    render_check._run_browser("headless_shell", "--dump-dom", "file:///x.html")
    assert "--headless" in seen[0] and not any(flag.startswith("--headless=") for flag in seen[0])
