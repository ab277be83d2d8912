"""The user-study page in a real headless Chromium (AFT paper appendix A.4; HIVE's distinct task, Kim et al. 2022).

The study is built with no option beyond ``--out``, the embedded world's defaults (``toy`` and ``toy-aft`` on the
shapes test images, 10 cases each, Grad-CAM); two tiny random ViTs stand in for the toys and a stub zero-shot head
with known predictions for theirs, so that nothing is trained. Scripted participants answer every case, by click
and by keyboard, reload midway without losing answers, go back and change an answer, and download their answers;
the scorer then gives the accuracies their scripts imply. The test takes screenshots of the first case and of the
end page, and checks the page's keyboard reachability and alt texts. It skips, naming what is missing, only where
no browser is installed (``apt-get install -y chromium chromium-driver``; see tests/browser.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import Browser, browser_fixture, is_png, require_browser
from test_study_cases import StubClassifier, tiny_vits

from aft_bench.apps.cli import main
from aft_bench.apps.study.cases import Case
from aft_bench.apps.study.manifest import StudyManifest, read_manifest
from aft_bench.core.registries import CLASSIFIERS, ENCODERS
from aft_bench.models.loading import load_encoder

browser = browser_fixture()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """``aft-bench study build --out DIR``: the embedded world's defaults, on stand-ins for the toys and their head."""
    specs = tiny_vits(tmp_path_factory.mktemp("encoders"))
    out = tmp_path_factory.mktemp("study")
    with ENCODERS.temporary("toy", lambda device="cpu": load_encoder(specs[0], device), replace=True), \
            ENCODERS.temporary("toy-aft", lambda device="cpu": load_encoder(specs[1], device), replace=True), \
            CLASSIFIERS.temporary("zero_shot", StubClassifier, replace=True):
        assert main(["study", "build", "--out", str(out)]) == 0
    return out


def test_the_default_build_is_the_papers_design(study: Path) -> None:
    manifest = read_manifest(study)
    assert manifest.encoder_specs() == ["toy", "toy-aft"] and len(manifest.cases) == 20
    assert manifest.config["dataset"] == "shapes" and manifest.config["attribution"] == "gradcam"
    for spec in ("toy", "toy-aft"):
        assert sorted(c.correct for c in manifest.cases if c.encoder == spec) == [False] * 5 + [True] * 5
    assert all(c.correct == (int(c.sample_id.rsplit("-", 1)[1]) % 2 == 0) for c in manifest.cases)  # the stub's
    assert [c.encoder for c in manifest.cases] != sorted(c.encoder for c in manifest.cases)  # the encoders shuffled


def _start(browser: Browser, participant: str) -> None:
    browser.find("#participant").clear()
    browser.find("#participant").send_keys(participant)
    browser.find("#start").click()


def _progress(browser: Browser) -> str:
    return browser.find("#progress-text").text


def _shows_case(browser: Browser, index: int, page: dict) -> None:
    assert browser.script("return document.getElementById('case-image').src;") == page["cases"][index]["image"]
    assert browser.find("#case-title").text == f"Case {index + 1} of {len(page['cases'])}"


def _page_data(study: Path) -> dict:
    html = (study / "study.html").read_text()
    return json.loads(re.search(r'id="study-data">(.*?)</script>', html, re.S).group(1))


def _reset(browser: Browser, study: Path) -> None:
    browser.open(study / "study.html")
    browser.script("window.localStorage.clear();")
    browser.open(study / "study.html")


def _download(browser: Browser, manifest: StudyManifest, participant: str) -> Path:
    path = browser.downloaded(f"answers-{manifest.study_id}-{participant}.json")
    return path.rename(path.with_name(f"{participant}.json"))


def _accuracies(manifest: StudyManifest, choose: Callable[[Case], int]) -> dict[tuple[str, str], float]:
    """The accuracy (%) a participant who answers ``choose(case)`` gets per encoder and kind of case."""
    out = {}
    for spec in manifest.encoder_specs():
        mine = [c for c in manifest.cases if c.encoder == spec]
        for subset, cases in (("correct", [c for c in mine if c.correct]), ("incorrect", [c for c in mine
                                                                                        if not c.correct]),
                              ("all", mine)):
            out[spec, subset] = 100 * sum(choose(c) == c.answer for c in cases) / len(cases)
    return out


def test_scripted_participants_answer_reload_download_and_score(browser: Browser, study: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    manifest = read_manifest(study)
    page = _page_data(study)
    total = len(manifest.cases)
    _reset(browser, study)
    assert browser.driver.title == "Which explanation shows the true class?"
    assert _progress(browser) == f"0 of {total} answered"

    # Participant 1 clicks the true class's map every time, reloads midway and changes one answer on the way.
    _start(browser, "clicker")
    _shows_case(browser, 0, page)
    first = browser.screenshot(tmp_path / "first_case.png")
    for index, case in enumerate(manifest.cases):
        if index == total // 2:
            browser.driver.refresh()
            _shows_case(browser, index, page)  # nothing lost: the same case, the earlier answers kept
            assert _progress(browser) == f"Case {index + 1} of {total} · {index} of {total} answered"
            assert browser.find("#restored").text == f"Welcome back, clicker: your {index} answers were restored."
            browser.find("#back").click()
            _shows_case(browser, index - 1, page)
            previous = manifest.cases[index - 1].answer
            assert browser.find(f"#choice-{previous}").get_attribute("aria-pressed") == "true"
            browser.find(f"#choice-{previous % 4 + 1}").click()  # a wrong answer instead...
            browser.find("#back").click()
            browser.find(f"#choice-{previous}").click()  # ...and the right one again
            _shows_case(browser, index, page)
        if index in (0, total // 2):
            assert browser.find("#next").get_attribute("disabled") == "true"  # no skipping
        browser.find(f"#choice-{case.answer}").click()
    assert browser.find("#end-view").is_displayed() and _progress(browser) == f"{total} of {total} answered"
    end = browser.screenshot(tmp_path / "end_page.png")
    assert is_png(first) and is_png(end) and first.read_bytes() != end.read_bytes()
    browser.find("#download").click()
    clicker = _download(browser, manifest, "clicker")
    assert json.loads(clicker.read_text())["answers"] == {c.id: c.answer for c in manifest.cases}

    # Participant 2 uses the keyboard only: always a wrong map, with Back (arrow left) once.
    browser.find("#new-participant").click()
    assert browser.find("#start-view").is_displayed() and browser.focused() == "participant"
    keys = [str(case.answer % 4 + 1) for case in manifest.cases]
    keys[4:4] = [Keys.ARROW_LEFT, keys[3]]  # back to the 4th case after answering it, and the same answer again
    browser.press("typist", Keys.ENTER, *keys)
    assert browser.focused() == "download"
    browser.press(Keys.ENTER)
    typist = _download(browser, manifest, "typist")

    # Participant 3 presses 1 for every case, after a reload on the start page.
    browser.press(Keys.TAB, Keys.TAB, Keys.ENTER)  # review, then "start a new participant"
    browser.driver.refresh()
    assert browser.find("#start-view").is_displayed()
    _start(browser, "ones")
    ActionChains(browser.driver).double_click(browser.find("#choice-1")).perform()
    assert _progress(browser) == f"Case 2 of {total} · 1 of {total} answered"  # a double click answers one case
    browser.press(*["1"] * (total - 1))
    browser.find("#download").click()
    ones = _download(browser, manifest, "ones")
    assert browser.console_errors() == []

    out = tmp_path / "results"
    assert main(["study", "score", str(study), str(clicker), str(typist), str(ones), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 participants scored, 0 answer files refused" in printed
    expected = [_accuracies(manifest, lambda c: c.answer), _accuracies(manifest, lambda c: c.answer % 4 + 1),
                _accuracies(manifest, lambda c: 1)]
    table = (out / "user_study" / f"table10__{manifest.study_id}.csv").read_text()
    for row in csv.DictReader(io.StringIO(table)):
        values = [e[row["encoder"], row["subset"]] for e in expected]
        mean = sum(values) / 3
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-3), row
        assert float(row["std"]) == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 2), abs=1e-3)
        assert row["participants"] == "3" and row["chance"] == "25.0"


def test_every_control_is_reachable_by_keyboard_and_images_have_alt_text(browser: Browser, study: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    _reset(browser, study)
    assert {"participant", "start"} <= set(browser.tab_order())
    assert browser.script("return document.querySelector('label[for=participant]').textContent;") == "Participant ID"
    browser.find("#start").click()  # no id: refused with a message
    assert browser.find("#participant-error").is_displayed() and browser.focused() == "participant"
    browser.press("reader", Keys.ENTER)
    browser.script("document.dispatchEvent(new KeyboardEvent('keydown', {key: '1', repeat: true}));")
    assert _progress(browser).startswith("Case 1 of")  # a key held down (auto-repeat) answers nothing
    browser.press("2", "3", Keys.ARROW_LEFT)  # case 2, answered: Back and Next are both live
    assert _progress(browser).startswith("Case 2 of")
    controls = {"choice-1", "choice-2", "choice-3", "choice-4", "back", "next"}
    assert controls <= set(browser.tab_order())
    images = browser.script("return Array.from(document.images).map(i => [i.alt, i.getAttribute('src') || '']);")
    assert len(images) == 5 and all(alt.strip() for alt, _ in images)
    assert all(src.startswith("data:image/") for _, src in images)  # nothing is fetched: works offline
    labels = browser.script("return Array.from(document.querySelectorAll('button')).map("
                            "b => (b.textContent + (b.getAttribute('aria-label') || '') + "
                            "Array.from(b.querySelectorAll('img')).map(i => i.alt).join('')).trim());")
    assert all(labels)
    browser.press(*["4"] * 30)
    assert browser.find("#end-view").is_displayed()
    assert {"download", "review"} <= set(browser.tab_order())
    assert browser.console_errors() == []


def test_without_a_browser_the_skip_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("AFT_BENCH_CHROMIUM", raising=False)
    monkeypatch.setenv("AFT_BENCH_CHROMEDRIVER", "/nowhere/chromedriver")
    monkeypatch.delenv("AFT_BENCH_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"missing a Chromium browser .*chromedriver .*apt-get install -y "
                                                    r"chromium chromium-driver"):
        require_browser()
    # Where the browser tests must run (the README's test command, so CI), a missing browser fails instead.
    monkeypatch.setenv("AFT_BENCH_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match=r"missing a Chromium browser .*AFT_BENCH_REQUIRE_BROWSER is set"):
        require_browser()
