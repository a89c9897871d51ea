"""The console in a real browser: Debian's headless Chromium driven by Selenium, against a real
``nova serve`` (binary: $NOVA_BIN). Screenshots of each page go to $NOVA_CONSOLE_SCREENSHOTS
(docs/console/ when refreshed by hand) or the test's temporary folder."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "clients" / "python"))
from nova_client import Client  # noqa: E402

ROLES_FILE = """\
users:
  ada@example.com: operator
patterns:
  - match: "*@example.com"
    role: viewer
default: none
"""

JOBS_FILE = """\
kinds:
  video.encode:
    type: external
  video.thumbnail:
    type: external
"""

THRESHOLDS_FILE = """\
rules:
  - name: OvenTooHot
    kpi: oven.temperature
    above: {critical: 90}
    for: 0s
    summary: "Oven at {{value}} degrees (threshold {{threshold}})"
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, url: str, port: int, tokens: Dict[str, str], process: subprocess.Popen, log: Path) -> None:
        self.url = url
        self.port = port
        self.tokens = tokens
        self.process = process
        self.log = log

    def client(self, role: str) -> Client:
        return Client(self.url, self.tokens[role], timeout=30)


@pytest.fixture(scope="module")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = Path(os.environ.get("NOVA_BIN") or REPO / ".build" / "debug" / "nova").absolute()
    data = tmp_path_factory.mktemp("console-data")
    tokens: Dict[str, str] = {}
    for role in ("admin", "operator", "viewer", "worker"):
        made = subprocess.run(
            [str(binary), "tokens", "create", "--name", f"b-{role}", "--role", role, "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60, check=True,
        )
        tokens[role] = made.stdout.strip().splitlines()[-1].strip()
    (data / "roles.yaml").write_text(ROLES_FILE)
    (data / "thresholds.yaml").write_text(THRESHOLDS_FILE)
    (data / "nova-jobs.yaml").write_text(JOBS_FILE)
    port = _free_port()
    log = data / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(data), "--port", str(port), "--workers", "0", "--checkpoint-seconds", "1",
             "--collect-seconds", "1", "--jobs", str(data / "nova-jobs.yaml"), "--thresholds", str(data / "thresholds.yaml"),
             "--auth-proxy-header", "X-Forwarded-Email", "--auth-proxy-roles", str(data / "roles.yaml"),
             "--auth-proxy-trusted", "127.0.0.1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, "nova serve did not start:\n" + log.read_text(errors="replace")[-3000:]
        time.sleep(0.1)
    try:
        yield Server(url, port, tokens, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def shots() -> Path:
    folder = Path(os.environ.get("NOVA_CONSOLE_SCREENSHOTS") or (Path(os.environ.get("TMPDIR", "/tmp")) / "nova-console-shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    # The whole page: the window grows to the document's height first.
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
    driver.set_window_size(1280, max(700, int(height)))
    path = shots() / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
    assert path.stat().st_size > 5000
    driver.set_window_size(1280, 1000)


def wait_for(driver: webdriver.Chrome, css: str, timeout: float = 20):
    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def sign_in(driver: webdriver.Chrome, server: Server, role: str) -> None:
    driver.delete_all_cookies()
    driver.get(server.url + "/console")
    assert "/login" in driver.current_url
    field = wait_for(driver, "input#token")
    field.send_keys(server.tokens[role])
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(driver, "[data-viewer]")
    assert driver.current_url.endswith("/console")


def make_dead_jobs(server: Server, kind: str, count: int) -> list[str]:
    operator = server.client("operator")
    worker = server.client("worker")
    ids = [operator.enqueue(kind, {"n": n}, queue="media", max_attempts=1).id for n in range(count)]
    for _ in range(count):
        claimed = worker.claim("browser-worker-1", queues=["media"], max=1, lease_seconds=30)
        assert claimed, "the worker got no job"
        worker.fail(claimed[0].id, claimed[0].lease, error="decoder crashed", retry=False)
    for job_id in ids:
        assert operator.get(job_id).state == "dead"
    return ids


def post_form(server: Server, path: str, fields: Dict[str, str], cookie: str) -> int:
    body = urllib.parse.urlencode(fields)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    status = connection.getresponse().status
    connection.close()
    return status


def test_operator_finds_a_job_retries_dead_jobs_and_controls_queues(nova: Server, browser: webdriver.Chrome) -> None:
    dead = make_dead_jobs(nova, "video.encode", 3)
    make_dead_jobs(nova, "video.thumbnail", 1)
    time.sleep(2.5)  # a checkpoint (every second) covers the jobs' entries
    sign_in(browser, nova, "operator")
    wait_for(browser, "[data-live-id='total.running']")
    screenshot(browser, "overview")

    # Find a job by id and see its audit trail verified against the signed checkpoint.
    browser.get(nova.url + "/console/jobs")
    search = wait_for(browser, "input[name=q]")
    search.send_keys(dead[0])
    search.submit()
    status = wait_for(browser, "#trail-status")
    assert browser.current_url.endswith("/console/jobs/" + dead[0])
    assert status.get_attribute("data-trail") == "verified", status.text
    proofs = [row.get_attribute("data-proof") for row in browser.find_elements(By.CSS_SELECTOR, "#trail tbody tr")]
    assert proofs and all(proof == "verified" for proof in proofs), proofs
    assert "decoder crashed" in browser.find_element(By.ID, "error").text
    screenshot(browser, "job")

    # Retry every dead job of one kind: the confirmation states the count.
    browser.get(nova.url + "/console/jobs?state=dead&kind=video.encode")
    screenshot(browser, "jobs")
    browser.find_element(By.CSS_SELECTOR, "button[value='retry-all']").click()
    prompt = wait_for(browser, "[data-bulk-count]")
    assert prompt.get_attribute("data-bulk-count") == "3", prompt.text
    screenshot(browser, "bulk-confirmation")
    browser.find_element(By.CSS_SELECTOR, "form button.danger").click()
    notice = wait_for(browser, ".notice")
    assert "Retried 3 jobs" in notice.text
    operator = nova.client("operator")
    assert [operator.get(job_id).state for job_id in dead] == ["available"] * 3
    thumbnails = operator.list(queue="media", state="dead").jobs
    assert len(thumbnails) == 1, "the other kind's dead job was left alone"

    # Pause and resume a queue.
    browser.get(nova.url + "/console/queues")
    wait_for(browser, "tr[data-queue='media']")
    browser.find_element(By.XPATH, "//button[text()='Pause media']").click()
    wait_for(browser, "tr[data-queue='media'] [data-paused='true']")
    screenshot(browser, "queues")
    browser.find_element(By.XPATH, "//button[text()='Resume media']").click()
    wait_for(browser, "tr[data-queue='media'] [data-paused='false']")

    # Workers and compliance pages render behind the same sign-in.
    browser.get(nova.url + "/console/workers")
    wait_for(browser, "tr[data-worker='browser-worker-1']")
    screenshot(browser, "workers")
    browser.get(nova.url + "/lux")
    wait_for(browser, "[data-figure='audit.coverage']")
    screenshot(browser, "compliance")


def test_operator_acknowledges_an_alert(nova: Server, browser: webdriver.Chrome) -> None:
    request = urllib.request.Request(
        nova.url + "/v1/kpis", method="POST", data=json.dumps({"name": "oven.temperature", "value": 120, "unit": "C"}).encode(),
        headers={"Authorization": "Bearer " + nova.tokens["operator"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    sign_in(browser, nova, "operator")
    deadline = time.monotonic() + 30
    while True:
        browser.get(nova.url + "/console/alerts")
        if browser.find_elements(By.CSS_SELECTOR, "tr[data-state='firing']"):
            break
        assert time.monotonic() < deadline, "the alert did not fire"
        time.sleep(0.5)
    browser.find_element(By.XPATH, "//tr[@data-state='firing']//button[text()='Acknowledge']").click()
    notice = wait_for(browser, ".notice")
    assert "acknowledged" in notice.text
    assert "b-operator" in browser.find_element(By.CSS_SELECTOR, "tr[data-state='firing']").text
    screenshot(browser, "alerts")


def test_forged_posts_viewers_and_sign_out(nova: Server, browser: webdriver.Chrome) -> None:
    sign_in(browser, nova, "operator")
    cookie = "nova_session=" + browser.get_cookie("nova_session")["value"]
    # Without the CSRF token, a POST with a valid session is refused.
    assert post_form(nova, "/console/queues/media/pause", {}, cookie) == 403
    # With it, accepted: the refusal above was the token's doing.
    page = urllib.request.urlopen(urllib.request.Request(nova.url + "/console/queues", headers={"Cookie": cookie}), timeout=10).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert post_form(nova, "/console/queues/media/resume", {"csrf": csrf}, cookie) == 303

    # Signing out ends the session: the console is refused with the old cookie.
    browser.get(nova.url + "/console")
    wait_for(browser, "form[action='/logout'] button").click()
    wait_for(browser, "input#token")
    assert "signed out" in browser.page_source
    browser.get(nova.url + "/console/queues")
    assert "/login" in browser.current_url
    refused = urllib.request.urlopen(urllib.request.Request(nova.url + "/console", headers={"Cookie": cookie}), timeout=10)
    assert "/login" in refused.geturl()

    # A viewer sees no action buttons, and its forged POST is 403 even with its CSRF token.
    sign_in(browser, nova, "viewer")
    browser.get(nova.url + "/console/queues")
    wait_for(browser, "tr[data-queue='media']")
    assert not browser.find_elements(By.XPATH, "//button[starts-with(text(), 'Pause')]")
    browser.get(nova.url + "/console/jobs")
    wait_for(browser, "#jobs")
    assert not browser.find_elements(By.ID, "bulk")
    viewer_cookie = "nova_session=" + browser.get_cookie("nova_session")["value"]
    viewer_csrf = browser.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    assert post_form(nova, "/console/queues/media/pause", {"csrf": viewer_csrf}, viewer_cookie) == 403
    screenshot(browser, "viewer-jobs")


def test_sign_in_through_the_proxy_header(nova: Server) -> None:
    def get(path: str, identity: str, source: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", nova.port, timeout=10, source_address=(source, 0))
        connection.request("GET", path, headers={"X-Forwarded-Email": identity})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        return response.status, body

    status, body = get("/console/queues", "ada@example.com", "127.0.0.1")
    assert status == 200 and 'data-viewer="ada@example.com"' in body and "Pause media" in body
    status, body = get("/console/queues", "bob@example.com", "127.0.0.1")
    assert status == 200 and "Pause media" not in body
    assert get("/console", "mallory@elsewhere.org", "127.0.0.1")[0] == 403
    # The same header from an address that is not the proxy's is not believed.
    status, body = get("/console/queues", "ada@example.com", "127.0.0.2")
    assert status == 403 and "only believed from" in body
