"""The web console in headless Chromium, against the real ``mqlflow serve``.

The service runs its real child flow (``flows.processor:from_definition``) with the
seed pipeline (sample_stream_solar -> 3 s ``$tumblingWindow``/``$group`` -> ``$merge``
into FerretDB). Chromium and chromedriver come from ``scripts/browser.sh`` (Debian's
``chromium`` and ``chromium-driver``); uPlot from the same script.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pymongo
import pytest
from svc_helpers import Service, http_request, launch, start_service

from flows.solar_demo import SOURCE, WINDOW

ROOT = Path(__file__).resolve().parents[2]
MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27018/")
ARTIFACTS = ROOT / ".cache" / "artifacts" / "console"
T = TypeVar("T")

pytestmark = [pytest.mark.browser, pytest.mark.mongodb]

# The seed tour's pipeline up to its $merge (shared with scripts/demo.sh).
SEED_PIPELINE: list[dict[str, Any]] = [SOURCE, WINDOW]

CONNECTIONS = f"""
[connections.MyOutputGoesHere]
type = "mongodb"
uri = "{MONGODB_URI}"

[connections.SecretKafka]
type = "kafka"
bootstrap_servers = "127.0.0.1:9092"
[connections.SecretKafka.security]
"security.protocol" = "SASL_SSL"
"sasl.username" = "alice"
"sasl.password" = "hunter2-not-shown"
"""


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 60.0, every: float = 0.3) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got = fn()
        except Exception as e:  # the page may be mid-refresh
            last = e
            got = None
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


@dataclass
class Serve(Service):
    db: str = ""  # the test database on FerretDB, dropped afterwards

    @property
    def url(self) -> str:
        assert self.console_url is not None
        return self.console_url


@pytest.fixture(scope="module")
def ferret() -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as e:
        pytest.fail(f"FerretDB at {MONGODB_URI} is not reachable ({e}); start it with: scripts/services.sh up mongodb")
    yield client
    client.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, ferret: pymongo.MongoClient[dict[str, Any]]) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("console")
    # One crash is enough to fail a processor: the FAILED test kills a child once.
    svc = start_service(tmp, "--http-port", "0", "--max-restarts", "0", connections=CONNECTIONS, cls=Serve)
    assert isinstance(svc, Serve)
    svc.db = f"console_{uuid.uuid4().hex[:8]}"
    yield svc
    svc.stop()
    ferret.drop_database(svc.db)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail("chromium/chromedriver are not installed; install them with: scripts/browser.sh")
    from service.web import find_assets

    if find_assets() is None:
        pytest.fail("uPlot (the console's charts) is not installed; install it with: scripts/browser.sh assets")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1100"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=ChromeService(executable_path=chromedriver))
    drv.set_page_load_timeout(30)
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


def _seed_into(serve: Serve, coll: str) -> list[dict[str, Any]]:
    return [*SEED_PIPELINE, {"$merge": {"into": {"connectionName": "MyOutputGoesHere", "db": serve.db, "coll": coll}}}]


def screenshot(drv: Any, tmp_path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = tmp_path / name
    drv.save_screenshot(str(out))
    shutil.copy(out, ARTIFACTS / name)
    return out


def _row(drv: Any, name: str) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    tr = drv.find_element(By.CSS_SELECTOR, f'#processors tr[data-name="{name}"]')
    get = lambda sel: tr.find_element(By.CSS_SELECTOR, sel).text  # noqa: E731
    return {"state": get("td.state-cell"), "input": get("td.input"), "output": get("td.output")}


def _count(text: str) -> int:
    return int(text.replace(",", "") or 0)


def test_processor_pages_charts_and_stop(serve: Serve, driver: Any, tmp_path: Path, ferret: pymongo.MongoClient[dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    name = "solarTemps"
    pipeline = _seed_into(serve, "temps")
    with serve.client() as c:
        c.admin.command({"createStreamProcessor": name, "pipeline": pipeline})
        c.admin.command({"startStreamProcessor": name})

    driver.get(serve.url)
    def started_input() -> int | None:
        r = _row(driver, name)
        return _count(r["input"]) if r["state"] == "STARTED" and _count(r["input"]) > 0 else None

    first = wait_for("STARTED with input", started_input)
    wait_for("a rising input count", lambda: _count(_row(driver, name)["input"]) > first)
    spark = driver.find_element(By.CSS_SELECTOR, f'#processors tr[data-name="{name}"] .spark')
    wait_for("the sparkline drawn", lambda: int(spark.get_attribute("data-points") or 0) >= 2, 30)
    wait_for("window results written", lambda: _count(_row(driver, name)["output"]) > 0, 60)
    screenshot(driver, tmp_path, "console-processors.png")

    driver.find_element(By.LINK_TEXT, name).click()
    wait_for("the processor page", lambda: driver.find_element(By.CSS_SELECTOR, "#state .state").text == "STARTED")
    chart = driver.find_element(By.ID, "rate-chart")
    wait_for("rate chart points", lambda: int(chart.get_attribute("data-points") or 0) >= 3, 30)
    # The chart's input series holds real, positive rates (uPlot's own data).
    assert driver.execute_script("return window.mqlCharts.rates.data[1].some(v => v > 0)") is True
    assert driver.find_element(By.CSS_SELECTOR, "#rate-chart canvas").size["width"] > 100
    flow = driver.find_element(By.ID, "dataflow").text
    for part in ("$source", "sample_stream_solar; 1 partition(s)", "$tumblingWindow",
                 "tumbling, size 3 s, allowed lateness 3 s, eventTime", "$group",
                 f'$merge into MyOutputGoesHere: "{serve.db}"."temps"'):
        assert part in flow, (part, flow)
    pipeline_text = json.loads(driver.find_element(By.ID, "pipeline").text)
    assert pipeline_text == pipeline
    wait_for("operatorStats", lambda: "$tumblingWindow" in driver.find_element(By.ID, "operator-stats").text)
    assert driver.find_element(By.ID, "dlq-info").text == "No dlq option: dead letters are only counted."
    # One script call reads the text, so a re-render cannot leave a stale element behind.
    text = wait_for("an output sample", lambda: driver.execute_script(
        "const d = document.querySelector('#sample .sample-doc'); return d && d.textContent;"), 40)
    sampled = json.loads(text)
    assert set(sampled) >= {"_id", "minTemp", "maxTemp", "avgTemp", "stdevPTemp", "_stream_meta"}
    screenshot(driver, tmp_path, "console-processor.png")

    driver.find_element(By.ID, "btn-stop").click()
    wait_for("STOPPED on the page", lambda: driver.find_element(By.CSS_SELECTOR, "#state .state").text == "STOPPED", 40)
    with serve.client() as c:
        listed = c.admin.command({"listStreamProcessors": 1, "filter": {"name": name}})["streamProcessors"]
    assert [(p["name"], p["state"]) for p in listed] == [(name, "STOPPED")]
    driver.get(serve.url)
    wait_for("STOPPED in the list", lambda: _row(driver, name)["state"] == "STOPPED")
    assert ferret[serve.db]["temps"].count_documents({}) > 0

    driver.get(serve.url + "connections")
    table = wait_for("connections", lambda: (t := driver.find_element(By.ID, "connections").text) and "SecretKafka" in t and t)
    assert '"sasl.password": "***"' in table and '"sasl.username": "alice"' in table
    assert "hunter2" not in driver.page_source


XSS_SCRIPT = "<script>window.__pwned = 1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'


def test_hostile_dlq_document_shows_as_text(serve: Serve, driver: Any, tmp_path: Path, ferret: pymongo.MongoClient[dict[str, Any]]) -> None:
    from selenium.webdriver.common.by import By

    name = "hostile<b>dlq</b>"
    pipeline = [
        {"$source": {"documents": [{"n": 1, "x": XSS_SCRIPT}, {"n": 2, "x": XSS_IMG}]}},
        {"$validate": {"validator": {"y": {"$exists": True}}, "validationAction": "dlq"}},
        {"$merge": {"into": {"connectionName": "MyOutputGoesHere", "db": serve.db, "coll": "never"}}},
    ]
    dlq = {"connectionName": "MyOutputGoesHere", "db": serve.db, "coll": "dlq"}
    with serve.client() as c:
        c.admin.command({"createStreamProcessor": name, "pipeline": pipeline, "options": {"dlq": dlq}})
        c.admin.command({"startStreamProcessor": name})
    wait_for("both DLQ documents in FerretDB", lambda: ferret[serve.db]["dlq"].count_documents({}) == 2, 60)

    driver.get(serve.url + "processors/" + urllib.parse.quote(name, safe=""))
    h1 = wait_for("the title", lambda: driver.find_element(By.TAG_NAME, "h1").text)
    assert h1.startswith(name)
    # The page re-renders the table while it polls: read the rows in one script call, so no
    # element goes stale between finding it and reading it.
    read_rows = """return Array.from(document.querySelectorAll('#dlq tr.dlq-entry')).map(
        r => [r.querySelector('td').textContent, r.querySelector('.dlq-doc').textContent,
              r.querySelector('.reason').textContent]);"""
    rows = wait_for("DLQ rows", lambda: len(r := driver.execute_script(read_rows)) == 2 and r)
    shown = sorted((json.loads(doc)["x"], why) for _, doc, why in rows)
    reason = "Input document found to be invalid in $validate stage: "
    assert [s[0] for s in shown] == sorted([XSS_SCRIPT, XSS_IMG])
    assert all(r.startswith(reason) for _, r in shown), shown
    times = [t for t, _, _ in rows]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times), times
    assert driver.find_element(By.ID, "dlq-info").text == f"From MyOutputGoesHere: {serve.db}.dlq"
    assert driver.find_elements(By.CSS_SELECTOR, "#dlq img, #dlq script, h1 b") == []
    assert driver.execute_script("return window.__pwned === undefined") is True
    driver.execute_script("document.getElementById('dlq').scrollIntoView()")
    screenshot(driver, tmp_path, "console-dlq-xss.png")

    # Drop asks first: dismissing keeps the processor, accepting drops it.
    driver.find_element(By.ID, "btn-drop").click()
    alert = driver.switch_to.alert
    assert alert.text == f'Drop stream processor "{name}"? Its definition and checkpoints are deleted.'
    alert.dismiss()
    with serve.client() as c:
        assert name in [p["name"] for p in c.admin.command({"listStreamProcessors": 1})["streamProcessors"]]
    driver.find_element(By.ID, "btn-drop").click()
    driver.switch_to.alert.accept()
    wait_for("back on the list", lambda: driver.current_url == serve.url)
    with serve.client() as c:
        assert name not in [p["name"] for p in c.admin.command({"listStreamProcessors": 1})["streamProcessors"]]


_http = http_request


def test_state_changes_need_the_csrf_token_and_same_origin(serve: Serve) -> None:
    opener = urllib.request.build_opener()
    with serve.client() as c:
        c.admin.command({"createStreamProcessor": "csrfTarget", "pipeline": _seed_into(serve, "csrf")})
    url = serve.url + "api/processors/csrfTarget/start"
    assert _http(opener, url, b"") == (403, '{"error": "missing or wrong CSRF token"}')
    page = _http(opener, serve.url)[1]
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert len(token) == 64
    evil = {"X-CSRF-Token": token, "Origin": "http://evil.example"}
    assert _http(opener, url, b"", evil) == (403, '{"error": "cross-origin request refused"}')
    assert _http(opener, serve.url + "api/processors/csrfTarget/explode", b"", {"X-CSRF-Token": token})[0] == 404
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host.
    rebound = {"X-CSRF-Token": token, "Host": "evil.example:" + serve.url.rsplit(":", 1)[1].strip("/")}
    refused = (403, '{"error": "this console answers loopback host names only (Host header refused)"}')
    assert _http(opener, url, b"", rebound) == refused
    assert _http(opener, serve.url + "api/processors", None, rebound) == refused
    assert _http(opener, serve.url + "api/processors/csrfTarget/stop", b"", {"X-CSRF-Token": token}) == (
        400, "{\"error\": \"stream processor 'csrfTarget' is not started\"}")
    with serve.client() as c:
        assert [p["state"] for p in c.admin.command({"listStreamProcessors": 1, "filter": {"name": "csrfTarget"}})["streamProcessors"]] == ["CREATED"]
        c.admin.command({"dropStreamProcessor": "csrfTarget"})


def test_non_loopback_needs_users_and_then_a_login(tmp_path: Path) -> None:
    refused = launch(tmp_path, "--http-port", "0", "--host", "0.0.0.0", connections=CONNECTIONS)
    assert refused.exit_code() != 0
    assert "(not loopback) requires users for SCRAM-SHA-256 authentication; pass --users FILE" in refused.log.read_text()

    users = tmp_path / "users.txt"
    users.write_text("ops:s3cret-pass\n")
    svc = start_service(tmp_path / "u", "--http-port", "0", "--host", "0.0.0.0", "--users", str(users), connections=CONNECTIONS)
    try:
        assert svc.console_url is not None and svc.console_url.startswith("http://0.0.0.0:"), svc.console_url
        base = "http://127.0.0.1:" + svc.console_url.rsplit(":", 1)[1].strip()
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        assert _http(opener, base + "api/processors") == (401, '{"error": "log in first"}')
        status, body = _http(opener, base)
        assert status == 200 and 'action="/login"' in body  # redirected to the login form
        form = urllib.parse.urlencode({"user": "ops", "password": "wrong"}).encode()
        assert '<p class="error" id="login-error">Wrong user or password.</p>' in _http(opener, base + "login", form)[1]
        assert _http(opener, base + "api/processors")[0] == 401
        form = urllib.parse.urlencode({"user": "ops", "password": "s3cret-pass"}).encode()
        _http(opener, base + "login", form)
        assert _http(opener, base + "api/processors") == (200, '{"processors": []}')
        page = _http(opener, base)[1]
        assert 'data-auth="1"' in page
        token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        assert _http(opener, base + "logout", b"")[0] == 403  # logging out is a POST: CSRF too
        assert _http(opener, base + "logout", b"", {"X-CSRF-Token": token})[0] == 200
        assert _http(opener, base + "api/processors")[0] == 401
    finally:
        svc.stop()



def test_failed_processor_shows_its_error(serve: Serve, driver: Any) -> None:
    """A real crash (kill -9 of the child) with --max-restarts 0 makes it FAILED."""
    name = "crashy"
    with serve.client() as c:
        c.admin.command({"createStreamProcessor": name, "pipeline": _seed_into(serve, "crashy")})
        c.admin.command({"startStreamProcessor": name})
        (pid_of,) = c.admin.command({"listStreamProcessors": 1, "filter": {"name": name}})["streamProcessors"]
    # Folders are keyed by the processor's id, never by its name.
    pidfile = serve.state_dir / "processors" / pid_of["id"] / "child.pid"
    pid = wait_for("the child's pid", lambda: pidfile.exists() and int(pidfile.read_text()), 30)
    driver.get(serve.url)
    wait_for("STARTED", lambda: _row(driver, name)["state"] == "STARTED")
    os.kill(pid, 9)
    with serve.client() as c:
        err = wait_for("FAILED", lambda: [p["errorMsg"] for p in c.admin.command({"listStreamProcessors": 1, "filter": {"name": name, "state": "FAILED"}})["streamProcessors"]], 30)[0]
        assert err == "processor failed after 1 attempt: exit code -9"
        wait_for("FAILED with its errorMsg on the page", lambda: _row(driver, name)["state"] == f"FAILED\n{err}", 15)
        c.admin.command({"dropStreamProcessor": name})


def test_hundred_processors_render_quickly(serve: Serve, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    names = [f"bulk{i:03d}" for i in range(100)]
    with serve.client() as c:
        for n in names:
            c.admin.command({"createStreamProcessor": n, "pipeline": _seed_into(serve, n)})
    opener = urllib.request.build_opener()
    t0 = time.monotonic()
    status, body = _http(opener, serve.url + "api/processors")
    api_seconds = time.monotonic() - t0
    assert status == 200 and sum(p["name"].startswith("bulk") for p in json.loads(body)["processors"]) == 100
    print(f"100 processors: /api/processors in {api_seconds * 1000:.0f} ms")
    assert api_seconds < 2.0, api_seconds  # generous for a loaded 2-core machine
    t0 = time.monotonic()
    driver.get(serve.url)
    wait_for("100 rows", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#processors tr[data-name^=bulk]")) == 100, 15)
    print(f"100 processors: page with 100 rows in {time.monotonic() - t0:.2f} s")
    assert time.monotonic() - t0 < 10
    assert _row(driver, "bulk099")["state"] == "CREATED"
    with serve.client() as c:
        for n in names:
            c.admin.command({"dropStreamProcessor": n})
