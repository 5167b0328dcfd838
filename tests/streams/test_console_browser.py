"""The analyst console end to end, in headless Chromium, against a real worker.

Embedded stack + worker with the console on; the page is open *before* any traffic, so
the alerts it shows arrive over the live stream. The test opens an alert, confirms it as
fraud, and checks what matters downstream: exactly one matching message on ``feedback``
and the user's threshold moved. ``RISKSTREAM_SCREENSHOTS=docs/img`` saves the queue and
case screenshots used by the README.

Chromium comes from Debian (``chromium``), installed by ``.ci/run``; the test skips, with
the reason, only where it cannot be installed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.worker_helpers import WorkerEnv, events_for

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _browser_or_skip():  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev extra)")
    return sync_playwright


def test_console_queue_case_and_confirm_fraud(wenv: WorkerEnv, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    shots = Path(os.environ.get("RISKSTREAM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    worker = wenv.start(
        extra_env={"RISKSTREAM_CONSOLE__ENABLED": "true", "RISKSTREAM_LOG_LEVEL": "INFO"}
    )
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(worker.url("/console"))

            # no session yet: the login form, then the (empty) queue with the live dot on
            page.get_by_label("Analyst name").fill("Dana Analyst")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_test_id("analyst").filter(has_text="Dana Analyst").wait_for()
            page.locator("#live.on").wait_for(timeout=10_000)
            assert page.get_by_test_id("alert-row").count() == 0

            wenv.produce(events_for(n_users=40, days=10))  # simulated traffic with frauds
            rows = page.get_by_test_id("alert-row")
            rows.first.wait_for(timeout=60_000)  # pushed over server-sent events
            page.wait_for_timeout(3000)  # let the batch finish arriving for the screenshot
            n_rows = rows.count()
            assert n_rows >= 3
            page.screenshot(path=str(shots / "console-queue.png"))

            first = rows.first
            alert_id = first.get_attribute("data-alert")
            assert first.get_by_test_id("model").inner_text().startswith("tl-")  # model version
            assert first.get_by_test_id("similar").inner_text()  # similar cases (or "none")
            first.click()
            case = page.get_by_test_id("case")
            case.wait_for()
            history = page.get_by_test_id("history").locator("tbody tr")
            history.first.wait_for()
            assert history.count() >= 2
            assert page.locator("#history tr.current").count() == 1  # the alerted event
            assert page.locator("#chart line").count() == history.count()
            # the alerted transaction's merchant/device profile (every simulated
            # transaction has a merchant or a device)
            profiles = page.get_by_test_id("profiles").locator(".profile")
            assert profiles.count() >= 1
            assert "transactions, last 24 h" in profiles.first.inner_text()
            case_data = page.evaluate(
                "id => fetch('/console/api/case/' + id).then(r => r.json())", alert_id
            )
            alert = case_data["alert"]
            before = case_data["current_threshold"]
            assert alert["alert_id"] == alert_id and alert["context"]["amount"]
            assert page.locator("#case-reasons li").count() == len(alert["reasons"]) >= 1

            page.get_by_test_id("confirm").click()
            decision = page.get_by_test_id("decision")
            try:
                decision.filter(has_text="→").wait_for(timeout=40_000)  # the threshold move
            except Exception as exc:  # say why, not just "timeout"
                metrics = urllib.request.urlopen(worker.url("/metrics"), timeout=5).read()
                applied = [
                    line
                    for line in metrics.decode().splitlines()
                    if line.startswith("riskstream_threshold_feedback_total")
                ]
                raise AssertionError(
                    f"no threshold move shown: {decision.inner_text()!r}; worker alive "
                    f"{worker.alive()}; feedback applied {applied}; "
                    f"feedback messages {len(wenv.read('feedback', idle_s=1.0))}"
                ) from exc
            assert "Dana Analyst" in decision.inner_text()
            assert page.get_by_test_id("confirm").is_disabled()  # no second click
            # the live "review" event for this label (it may arrive after the answer) and
            # reopening the case keep showing what the click did
            page.wait_for_timeout(1500)
            page.locator("#f-status").select_option("all")
            page.locator(f'tr[data-alert="{alert_id}"]').click()
            decision.filter(has_text="→").wait_for(timeout=10_000)
            assert "fraud" in page.locator(f'tr[data-alert="{alert_id}"] .tag').inner_text()
            page.screenshot(path=str(shots / "console-case.png"))

            # a second submission (another tab, a retry) sends nothing
            again = page.evaluate(
                """id => fetch('/console/api/decision', {method: 'POST',
                     headers: {'Content-Type': 'application/json'},
                     body: JSON.stringify({alert_id: id, label: 'fraud'})}).then(r => r.json())""",
                alert_id,
            )
            assert again["status"] == "already"
            after = page.evaluate(
                "id => fetch('/console/api/case/' + id).then(r => r.json())", alert_id
            )["current_threshold"]
            assert after < before  # a confirmed fraud lowers the user's bar

            numbers = page.get_by_test_id("numbers").inner_text()
            assert "alerts" in numbers and "reviewed" in numbers
            browser.close()

        feedback = [json.loads(m.value()) for m in wenv.read("feedback", idle_s=2.0)]
        mine = [f for f in feedback if f["transaction_id"] == alert["transaction_id"]]
        assert len(feedback) == 1 and len(mine) == 1
        assert mine[0]["label"] == "fraud" and mine[0]["user_id"] == alert["user_id"]
        assert mine[0]["analyst"] == "Dana Analyst"
        # the worker logged the applied label with the user id as a keyed hash only
        log_text = Path(worker.log.name).read_text(errors="replace")
        applied = [line for line in log_text.splitlines() if "label fraud for transaction" in line]
        assert applied and alert["transaction_id"] in applied[0] and " of u#" in applied[0]
        assert alert["user_id"] not in log_text
        for name in ("console-queue.png", "console-case.png"):
            assert (shots / name).stat().st_size > 10_000
    finally:
        worker.stop()


def test_console_api_access_errors_and_token(wenv: WorkerEnv) -> None:
    """Off by default; with a token the login needs it; bad requests get a 4xx JSON error."""
    plain = wenv.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as off:  # the console is off by default
            urllib.request.urlopen(plain.url("/console/api/me"), timeout=5)
        assert off.value.code == 404
        off.value.close()
    finally:
        plain.stop()
    worker = wenv.start(
        extra_env={"RISKSTREAM_CONSOLE__ENABLED": "true", "RISKSTREAM_HTTP__TOKEN": "t0ken"}
    )
    try:
        status, body = worker.get("/console/api/alerts")
        assert status == 401 and body["needs_password"] is True
        login = json.dumps({"analyst": "ana", "password": "nope"}).encode()
        assert worker.post("/console/api/login", login)[0] == 401
        bearer = {"Authorization": "Bearer t0ken", "X-Analyst": "robot"}
        assert worker.post("/console/api/decision", b"{}", bearer)[0] == 400
        missing = json.dumps({"alert_id": "nope", "label": "fraud"}).encode()
        assert worker.post("/console/api/decision", missing, bearer)[0] == 404
        assert worker.post("/console/api/decision", b"[1]", {"Cookie": "x=y"})[0] == 401
        assert worker.alive()
    finally:
        worker.stop()
