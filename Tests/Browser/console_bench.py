"""The console's figures in headless Chromium, for `cordon-bench console --browser`: the map's
first render, its pan-and-zoom frame rate, and the fleet page's first render. Prints markdown rows."""
import os
import statistics

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
RUNS = int(os.environ.get("CONSOLE_RUNS", "5"))

# From the hash change to the page drawn: the first of `selector`'s elements exists and two
# animation frames have passed (the browser painted it).
RENDER = """const [hash, selector, done] = arguments;
const t0 = performance.now();
const check = () => {
  if (document.querySelector(selector)) requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
  else setTimeout(check, 2);
};
location.hash = hash;
check();"""

# Three seconds of wheel zooming in and out about the centre, one event per frame: frames drawn per second.
ZOOM = """const [done] = arguments;
const svg = document.querySelector("svg#map"), rect = svg.getBoundingClientRect();
let frames = 0, i = 0; const t0 = performance.now();
function step(now) {
  frames++;
  svg.dispatchEvent(new WheelEvent("wheel", {deltaY: (i++ % 40) < 20 ? -60 : 60, clientX: rect.left + rect.width / 2,
                                             clientY: rect.top + rect.height / 2, bubbles: true, cancelable: true}));
  if (now - t0 < 3000) requestAnimationFrame(step); else done(frames * 1000 / (now - t0));
}
requestAnimationFrame(step);"""


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--no-first-run",
                 f"--ignore-certificate-errors-spki-list={os.environ['CONSOLE_SPKI']}", f"--user-data-dir={os.environ['CONSOLE_PROFILE']}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.set_script_timeout(120)
        driver.get(URL + "/console/")
        WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.ID, "token"))).send_keys(os.environ["CONSOLE_TOKEN"])
        driver.find_element(By.ID, "sign-in-button").click()
        WebDriverWait(driver, 120).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#hosts tbody tr")))

        def render(hash, selector):
            times = []
            for _ in range(RUNS):
                driver.execute_script("location.hash = '#/rollouts'")
                WebDriverWait(driver, 60).until(EC.presence_of_element_located((By.ID, "rollouts")))
                times.append(driver.execute_async_script(RENDER, hash, selector))
            return times

        fleet = render("#/fleet?sort=hostname", "#hosts tbody tr")
        rows = driver.execute_script("return document.querySelector('.pager').textContent")
        maps = render("#/map?group=grp&window=7d", "svg#map .nodes > g")
        nodes = driver.execute_script("return document.querySelectorAll('svg#map .node').length")
        edges = driver.execute_script("return document.querySelectorAll('svg#map path.edge').length")
        fps = [driver.execute_async_script(ZOOM) for _ in range(3)]
        print(f"| map first render in the browser ({nodes} nodes, {edges} edges), hash change to painted | "
              f"{statistics.median(maps):.0f} ms | max {max(maps):.0f} ms | < 1.5 s |")
        print(f"| pan and zoom on that map (a wheel event every frame for 3 s) | {statistics.median(fps):.0f} fps | min {min(fps):.0f} fps | ≥ 30 fps |")
        print(f"| fleet page first render ({rows.strip()}), hash change to painted | {statistics.median(fleet):.0f} ms | max {max(fleet):.0f} ms | < 1 s |")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
