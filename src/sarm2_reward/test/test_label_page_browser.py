"""The labelling page in a real headless browser (Debian chromium + chromium-driver, selenium).

On the recorded rollout bag: open it from the list, scrub, play, mark a segment by dragging on
the timeline, set the outcome and final progress, save with the keyboard, and find exactly that
label in the sidecar file; reopening the page shows it again. Skips (naming the packages) where
chromium or its driver is not installed; `make bootstrap` installs them when run as root.
"""

import shutil

import pytest

from label_server_harness import BROKEN_NAME, ROLLOUT_NAME
from sarm2_common.rollout_labels import load_label

PACKAGES = 'apt-get install chromium chromium-driver (make bootstrap does this as root)'
# Flags that let chromium run headless in a container without reaching the network.
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--window-size=1400,1100')
WAIT_S = 20


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver_path = shutil.which('chromedriver')
    if chromium is None or driver_path is None:
        pytest.skip(f'needs a headless browser: {PACKAGES}')
    webdriver = pytest.importorskip('selenium.webdriver', reason='needs selenium '
                                    '(requirements/python.txt)')
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={tmp_path / "chromium-profile"}')
    # An explicit driver path: selenium never looks for (or downloads) a driver itself.
    service = Service(executable_path=driver_path, log_output=str(tmp_path / 'driver.log'))
    driver = webdriver.Chrome(service=service, options=options)
    yield driver
    driver.quit()


def test_label_a_recorded_rollout_in_the_browser(label_server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(label_server.url)
    row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                              f'tr.rollout[data-name="{ROLLOUT_NAME}"]'))
    broken = browser.find_element(By.CSS_SELECTOR, f'tr[data-name="{BROKEN_NAME}"]')
    assert 'cannot read this bag' in broken.text
    row.click()
    _, detail, _ = label_server.request('GET', f'/api/rollout?name={ROLLOUT_NAME}')
    times, camera = detail['times'], detail['reference_camera']
    image = f'frame-{camera}'

    def shown_frame() -> int | None:
        """Index of the reference camera's frame on screen, once it has loaded."""
        return browser.execute_script(
            'const img = document.getElementById(arguments[0]);'
            'return img && img.complete && img.naturalWidth > 0 ? Number(img.dataset.index)'
            ' : null;', image)

    wait.until(lambda d: shown_frame() == 0)
    assert browser.find_element(By.ID, 'title').text.startswith(detail['task'])

    # Scrub: the frame slider, the page's frame keys, a click on the timeline; then play.
    slider = browser.find_element(By.ID, 'frame-slider')
    slider.send_keys(Keys.HOME + Keys.ARROW_RIGHT * 5)
    wait.until(lambda d: shown_frame() == 5)
    browser.find_element(By.ID, 'title').click()                # keys go to the page now
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(
        Keys.SHIFT).send_keys(Keys.ARROW_LEFT).perform()
    wait.until(lambda d: shown_frame() == 14)
    canvas = browser.find_element(By.ID, 'timeline')
    geometry = {key: float(canvas.get_attribute(f'data-{key}'))
                for key in ('plot-left', 'plot-right', 'lane-top', 'lane-height')}
    size = canvas.size
    left, right = geometry['plot-left'], geometry['plot-right']

    def at(x: float, y: float) -> ActionChains:
        """Actions starting with the pointer at canvas pixel (x, y)."""
        return ActionChains(browser).move_to_element_with_offset(
            canvas, round(x - size['width'] / 2), round(y - size['height'] / 2))

    def time_at(x: float) -> float:
        return (x - left) / (right - left) * detail['duration']

    middle = left + 0.5 * (right - left)
    at(middle, size['height'] / 2).click().perform()
    nearest = min(range(len(times)), key=lambda i: abs(times[i] - time_at(middle)))
    wait.until(lambda d: shown_frame() in (nearest - 1, nearest, nearest + 1))
    start_frame = int(slider.get_attribute('value'))
    ActionChains(browser).send_keys(' ').perform()              # play at recorded speed
    wait.until(lambda d: int(slider.get_attribute('value')) >= start_frame + 4)
    ActionChains(browser).send_keys(' ').perform()              # pause

    # Mark a 'mistake' segment (key 4) by dragging in the timeline's top lane.
    ActionChains(browser).send_keys('4').perform()
    assert 'active' in browser.find_element(
        By.CSS_SELECTOR, '#kinds button[data-kind="mistake"]').get_attribute('class')
    x0, x1 = left + 0.3 * (right - left), left + 0.7 * (right - left)
    lane = geometry['lane-top'] + geometry['lane-height'] / 2
    at(x0, lane).click_and_hold().move_by_offset(round(x1 - x0), 0).release().perform()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#segments tr.segment')) == 1)

    # Outcome: failure, final progress 0.40 (slider steps of 0.01).
    browser.find_element(By.ID, 'success-no').click()
    progress = browser.find_element(By.ID, 'final-progress')
    progress.send_keys(Keys.HOME + Keys.ARROW_RIGHT * 40)
    assert browser.find_element(By.ID, 'final-progress-value').text == '0.40'
    # The implied progress curve is drawn before saving: one point per frame.
    wait.until(lambda d: canvas.get_attribute('data-preview-points') == str(len(times)))

    ActionChains(browser).send_keys('s').perform()
    status = browser.find_element(By.ID, 'save-status')
    wait.until(lambda d: 'Saved' in status.text)
    assert 'labelled' in status.text

    label = load_label(label_server.root / ROLLOUT_NAME)
    assert label is not None and label.episode_id == detail['episode_id']
    assert (label.success, label.final_progress, label.catastrophic_time) == (False, 0.4, None)
    assert label.labeller_kind == 'person' and label.duration == detail['duration']
    (segment,) = label.segments
    assert segment.kind == 'mistake'
    period = (times[-1] - times[0]) / (len(times) - 1)
    for value, x in ((segment.start, x0), (segment.end, x1)):
        expected = time_at(x)
        assert value in times and abs(value - expected) <= period

    # Next/previous rollout keys: the unreadable bag says why; back again shows the label.
    names = [r.get_attribute('data-name') for r in browser.find_elements(By.CSS_SELECTOR,
                                                                         'tr.rollout')]
    towards_broken = 'j' if names.index(BROKEN_NAME) > names.index(ROLLOUT_NAME) else 'k'
    ActionChains(browser).send_keys(towards_broken).perform()
    wait.until(lambda d: 'cannot read this bag' in d.find_element(By.ID, 'empty').text)
    ActionChains(browser).send_keys('k' if towards_broken == 'j' else 'j').perform()
    wait.until(lambda d: shown_frame() == 0)

    # Reopening the page shows the saved label.
    browser.refresh()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                        f'tr.rollout[data-name="{ROLLOUT_NAME}"]')).click()
    wait.until(lambda d: 'Saved label (labelled)' in d.find_element(By.ID, 'save-status').text)
    assert browser.find_element(By.ID, 'final-progress').get_attribute('value') == '0.4'
    assert browser.find_element(By.ID, 'success-no').is_selected()
    (row_text,) = [r.text for r in browser.find_elements(By.CSS_SELECTOR, '#segments tr')]
    assert f'{segment.start:.2f} – {segment.end:.2f} s' in row_text
    listed = browser.find_element(By.CSS_SELECTOR, f'tr.rollout[data-name="{ROLLOUT_NAME}"]')
    assert 'labelled' in listed.text

    # Everything the page loaded came from this server.
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(url.startswith(label_server.url) for url in urls)
