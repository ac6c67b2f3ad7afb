"""The console in a real browser: Debian's chromium, headless, driven by selenium through
Debian's chromedriver (SE_OFFLINE: nothing is downloaded). Run by ConsoleBrowserTests, which
starts the server, PostgreSQL and an agent in namespaces and passes what it made in the
environment; each step prints what it checked, and the first failure exits non-zero."""
import json
import os
import ssl
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
SPKI = os.environ["CONSOLE_SPKI"]
RESPONDER = os.environ["CONSOLE_RESPONDER_TOKEN"]
VIEWER = os.environ["CONSOLE_VIEWER_TOKEN"]
ADMIN = os.environ["CONSOLE_ADMIN_TOKEN"]
AGENT_HOST = os.environ["CONSOLE_AGENT_HOST"]
AGENT_NAME = os.environ["CONSOLE_AGENT_NAME"]
PROBE_HOST = os.environ["CONSOLE_PROBE_HOST"]
PROBE_NAME = os.environ["CONSOLE_PROBE_NAME"]
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
STEP = os.environ.get("CONSOLE_STEP", "all")


def check(condition, message):
    if not condition:
        print("FAILED:", message, flush=True)
        raise SystemExit(1)
    print("ok:", message, flush=True)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                 "--no-first-run", "--disable-extensions", "--disable-background-networking",
                 # The server's certificate, by the hash of its key: real TLS, trusted for this key alone.
                 f"--ignore-certificate-errors-spki-list={SPKI}", f"--user-data-dir={os.environ['CONSOLE_PROFILE']}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def wait(driver, condition, seconds=15):
    return WebDriverWait(driver, seconds).until(condition)


def shot(driver, name):
    if SCREENSHOTS:
        time.sleep(0.5)
        driver.save_screenshot(os.path.join(SCREENSHOTS, name + ".png"))


def sign_in(driver, token):
    driver.get(URL + "/console/")
    field = wait(driver, EC.presence_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in-button").click()
    wait(driver, EC.visibility_of_element_located((By.ID, "sign-out")))


def sign_out(driver):
    driver.find_element(By.ID, "sign-out").click()
    wait(driver, EC.presence_of_element_located((By.ID, "token")))


def fetch(driver, method, path, csrf=None):
    """A request made by the page's own origin with its cookie: status and body."""
    return driver.execute_async_script("""
        const [method, path, csrf, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (csrf) headers["X-CSRF-Token"] = csrf;
        fetch(path, {method, headers, credentials: "same-origin",
                     body: method === "GET" ? undefined : JSON.stringify({state: "released", reason: "forged"})})
          .then(async (r) => done([r.status, await r.text()]), (e) => done([0, String(e)]));
    """, method, path, csrf)


# Read in the page, in one call: an element looked up by selenium can go stale as a live update redraws.
FACT = """const [name] = arguments;
  const dt = [...document.querySelectorAll('#facts dt')].find((e) => e.textContent === name);
  return dt ? dt.nextElementSibling.textContent : null;"""
ROW = """const [host, column] = arguments;
  const row = document.querySelector(`#hosts tr[data-host="${host}"]`);
  return row ? row.children[column].textContent : null;"""


def api(method, path, body):
    """The API as another analyst calls it: the responder's bearer token, the server's CA."""
    context = ssl.create_default_context(cafile=os.environ["CONSOLE_CA"])
    request = urllib.request.Request(URL + path, method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {RESPONDER}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return json.loads(answer.read())


def main():
    driver = browser()
    try:
        driver.set_script_timeout(20)
        # Sign-in: the page asks for a token, then shows the fleet.
        sign_in(driver, RESPONDER)
        check("rita" in driver.find_element(By.ID, "who").text, "signed in as the responder")
        cookies = {c["name"]: c for c in driver.get_cookies()}
        cookie = cookies.get("__Host-cordon-session")
        check(cookie is not None and cookie["httpOnly"] and cookie["secure"] and cookie.get("sameSite") == "Strict",
              f"the session cookie is HttpOnly, Secure and SameSite=Strict: {cookie}")
        check(driver.execute_script("return document.cookie") == "", "script cannot read the session cookie")

        # The fleet page lists the enrolled hosts; the host whose name is markup is text.
        table = wait(driver, EC.presence_of_element_located((By.ID, "hosts")))
        wait(driver, lambda d: AGENT_NAME in d.find_element(By.ID, "hosts").text)
        names = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#hosts tbody td:first-child")]
        check(AGENT_NAME in names and PROBE_NAME in names, f"the fleet page lists the enrolled hosts, the one named in markup as text: {names}")
        check(len(table.find_elements(By.TAG_NAME, "img")) == 0, "a hostname holding <img …> made no element")
        check(driver.execute_script("return window.__cordonXSS === undefined"), "and ran nothing")
        shot(driver, "fleet")

        # A change made elsewhere (the API, as another analyst) reaches the open page by itself.
        check(driver.find_element(By.ID, "live").is_displayed(), "the page is listening for changes")
        driver.execute_script("window.__cordonSamePage = 1")
        api("POST", f"/api/v1/hosts/{PROBE_HOST}/isolation", {"state": "isolated", "reason": "another analyst"})
        wait(driver, lambda d: d.execute_script(ROW, PROBE_HOST, 3) == "released → isolated", 20)
        check(driver.execute_script("return window.__cordonSamePage") == 1, "the fleet page showed another analyst's isolation live, without a reload")
        api("POST", f"/api/v1/hosts/{PROBE_HOST}/isolation", {"state": "released", "reason": "another analyst"})
        wait(driver, lambda d: d.execute_script(ROW, PROBE_HOST, 3) == "released", 20)

        # The selector's live preview.
        field = driver.find_element(By.ID, "selector")
        field.send_keys('role == "probe"')
        wait(driver, lambda d: "matches" in d.find_element(By.ID, "preview").text)
        check(driver.find_element(By.ID, "preview").text == "matches 1 hosts", "the selector preview counts the hosts it matches")

        # The probe host's map: its standard networks by name and a red edge for the port it refused.
        driver.get(URL + f"/console/#/map?host={PROBE_HOST}&window=24h")
        wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "svg#map .node")))
        nodes = [n.get_attribute("data-node") for n in driver.find_elements(By.CSS_SELECTOR, "svg#map .node")]
        check("net:dns" in nodes and "net:ntp" in nodes, f"the map shows the standard networks by name: {nodes}")
        rejected = driver.find_elements(By.CSS_SELECTOR, "svg#map path.edge[data-state=rejected]")
        check(len(rejected) == 1 and rejected[0].get_attribute("stroke").upper() == "#D55E00", "one red edge: the port it refused")
        check(len(driver.find_elements(By.CSS_SELECTOR, "#legend li")) == 4, "the legend names the four states")
        titles = [t.get_attribute("textContent") or "" for t in driver.find_elements(By.CSS_SELECTOR, "svg#map title")]
        check(any(title.startswith(PROBE_NAME) for title in titles), "the map labels the host with its markup name, as text")
        check(driver.execute_script("return window.__cordonXSS === undefined") and len(driver.find_elements(By.CSS_SELECTOR, "svg#map image, #view img")) == 0,
              "which drew no element and ran nothing")
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", rejected[0])
        wait(driver, EC.presence_of_element_located((By.ID, "edge-flows")))
        wait(driver, lambda d: "198.51.100.66" in d.find_element(By.ID, "edge-flows").text)
        check(True, "a click on the red edge lists its flow")
        # The table view lists every edge, and its rows list flows too.
        driver.find_element(By.CSS_SELECTOR, "#edge-table summary").click()
        wait(driver, EC.presence_of_element_located((By.ID, "edge-table-rows")))
        cells = driver.find_elements(By.CSS_SELECTOR, "#edge-table-rows tr[data-state=rejected] a[data-edge]")
        check(len(cells) == 1 and len(driver.find_elements(By.CSS_SELECTOR, "#edge-table-rows tbody tr")) == len(driver.find_elements(By.CSS_SELECTOR, "svg#map path.edge")),
              "the table view lists the map's edges, the refused one among them")
        shot(driver, "map")

        # Host a's map: its real agent enforces a policy and refused tcp/8443; that edge is red.
        driver.get(URL + f"/console/#/map?host={AGENT_HOST}&window=24h")
        wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "svg#map .node")))
        refused = [e.get_attribute("data-edge") for e in driver.find_elements(By.CSS_SELECTOR, "svg#map path.edge[data-state=rejected]")]
        check(any("|tcp/8443|" in (edge or "") for edge in refused), f"the agent's map shows a red edge for the port its kernel refused: {refused}")
        allowed = [e.get_attribute("data-edge") for e in driver.find_elements(By.CSS_SELECTOR, "svg#map path.edge[data-state=allowed]")]
        check(len(allowed) >= 1, f"and solid green for what its policy allows: {allowed}")

        # The fleet's map, grouped by the tag most hosts carry.
        driver.get(URL + "/console/#/map?window=24h")
        wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "svg#map .node")))
        shot(driver, "fleet-map")

        # Isolating from the page: a reason, then a confirmation. The test checks the traffic.
        driver.get(URL + f"/console/#/host/{AGENT_HOST}")
        reason = wait(driver, EC.presence_of_element_located((By.ID, "reason")))
        shot(driver, "host")
        reason.send_keys("console browser test")
        driver.find_element(By.ID, "isolate").click()
        confirm = wait(driver, EC.visibility_of_element_located((By.ID, "confirm-isolation")))
        confirm.click()
        wait(driver, lambda d: "Requested" in d.find_element(By.ID, "isolation-message").text)
        check(True, "isolation requested from the page")
        # The agent's report reaches the open page (server-sent events, or the read after the request).
        wait(driver, lambda d: d.execute_script(FACT, "Isolation") == "isolated", 30)
        check(True, "the host page shows the host isolated as its agent reports it")

        # A request without the CSRF token fails, though the cookie is sent.
        status, body = fetch(driver, "POST", f"/api/v1/hosts/{AGENT_HOST}/isolation")
        check(status == 403 and "CSRF" in body, f"a state change without the CSRF token is refused: {status} {body}")

        # The audit log (the responder may not read it: no link shown, and the server refuses it).
        check(not driver.find_element(By.CSS_SELECTOR, "a[href='#/audit']").is_displayed(), "a responder sees no audit link")
        driver.get(URL + "/console/#/rollouts")
        wait(driver, EC.presence_of_element_located((By.ID, "rollouts")))
        check(len(driver.find_elements(By.ID, "start-rollout")) == 0, "a responder has no form to start a rollout")
        sign_out(driver)

        # An administrator starts a rollout from the page: a bad number is named before anything
        # is sent, the server's refusal is shown with its field, and a good one asks for a
        # confirmation naming how many hosts it changes, then runs, its waves' progress live.
        sign_in(driver, ADMIN)
        driver.get(URL + "/console/#/rollouts")
        form = wait(driver, EC.presence_of_element_located((By.ID, "start-rollout")))
        def start(selector, soak):
            for name, value in [("selector", selector), ("waves", "100%"), ("soak", soak)]:
                field = form.find_element(By.NAME, name)
                field.clear()
                field.send_keys(value)
            form.find_element(By.CSS_SELECTOR, "#rollout-mode option[value=discovery]").click()
            driver.find_element(By.ID, "start-rollout-button").click()
        start('tier == "web"', "x")
        wait(driver, lambda d: "soak_seconds" in d.find_element(By.ID, "rollout-confirm").text)
        start('role == "probe"', "0")
        wait(driver, EC.element_to_be_clickable((By.ID, "confirm-rollout"))).click()
        wait(driver, lambda d: "approved on the host itself" in d.find_element(By.ID, "rollout-confirm").text)
        check(driver.find_element(By.ID, "rollout-confirm").text.startswith("selector:"), "the server's refusal is shown with its field")
        start('tier == "web"', "0")
        go = wait(driver, EC.element_to_be_clickable((By.ID, "confirm-rollout")))
        check(go.text == "Start: discovery on 1 hosts in waves 100%", f"the confirmation names what changes: {go.text}")
        go.click()
        wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, "#rollout-waves li[data-wave='1']")))
        wait(driver, lambda d: "succeeded" in d.find_element(By.ID, "rollout-title").text, 30)
        check(driver.execute_script("return document.querySelector('#rollout-waves progress').value") == 1,
              f"the rollout ran, shown live, its wave's bar full: {driver.find_element(By.ID, 'rollout-waves').text}")
        shot(driver, "rollouts")
        driver.get(URL + "/console/#/audit")
        wait(driver, lambda d: "rollout-start" in d.find_element(By.ID, "audit").text)
        check("discovery tier == \"web\" (1 hosts)" in driver.find_element(By.ID, "audit").text, "the start is in the audit log, as the administrator's")
        sign_out(driver)

        # A viewer: no isolate button, and a forged request is 403 for the role.
        sign_in(driver, VIEWER)
        driver.get(URL + f"/console/#/host/{AGENT_HOST}")
        wait(driver, EC.presence_of_element_located((By.ID, "facts")))
        check(len(driver.find_elements(By.ID, "isolate")) == 0, "a viewer has no isolate button")
        session = json.loads(fetch(driver, "GET", "/api/v1/session")[1])
        status, body = fetch(driver, "POST", f"/api/v1/hosts/{AGENT_HOST}/isolation", csrf=session["csrf_token"])
        check(status == 403 and "responder" in body, f"a viewer's forged isolation, CSRF token and all, is 403: {status} {body}")
        sign_out(driver)
        status, _ = fetch(driver, "GET", "/api/v1/hosts")
        check(status == 401, "after signing out the cookie reads nothing")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "Content Security Policy" in e["message"]]
        check(errors == [], f"no Content-Security-Policy violations: {errors}")
    except BaseException:
        # What the page showed and said when a step failed.
        print("--- at", driver.current_url, flush=True)
        print(driver.find_element(By.TAG_NAME, "body").text[:3000], flush=True)
        for entry in driver.get_log("browser"):
            print("console:", entry["level"], entry["message"][:500], flush=True)
        raise
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
