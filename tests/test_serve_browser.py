"""The chat page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through
selenium) loads ``/``, sends messages, watches the reply arrive in pieces, and ends with the same text the API
gives for the same conversation; reset starts over. Skips with the reason when no browser is installed."""

import shutil
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from ownlm.model.checkpoint import save_model  # noqa: E402
from ownlm.model.gpt import GPT, GPTConfig  # noqa: E402
from ownlm.serve.cli import ServeConfig, build_app, serve_in_thread  # noqa: E402
from ownlm.tokenizer import Tokenizer  # noqa: E402
from ownlm.tokenizer.chat import add_special_tokens, get_template, save_template  # noqa: E402

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import torch

    run = tmp_path_factory.mktemp("page") / "page-run"
    text = "Sphinx of black quartz, judge my vow. The five boxing wizards jump quickly. " * 30
    tok = add_special_tokens(
        Tokenizer.train([text], vocab_size=300, progress=False), ["<|im_start|>", "<|im_end|>"]
    )
    torch.manual_seed(1)
    model = GPT(
        GPTConfig(
            vocab_size=320, block_size=256, n_layer=2, n_head=2, n_embd=32, pos="rope", tie_embeddings=False
        )
    )  # untied: a random tied model just echoes its input
    save_template(save_model(run / "step_000001", model, tok), get_template("chatml"))
    (run / "latest").write_text("step_000001\n")
    app = build_app(ServeConfig(run=str(run), device="cpu"))
    engine = app.state.engine
    fast = engine._forward

    def paced(*a):  # 30 ms a step, so the page is seen mid-reply
        time.sleep(0.03)
        return fast(*a)

    engine._forward = paced
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def api_reply(app, messages, max_tokens, penalty=1.3) -> str:
    """What the server's own engine answers for ``messages`` (greedy), bypassing the page."""
    from ownlm.serve.engine import SamplingParams

    engine = app.state.engine
    template = get_template("chatml")
    ids = template.encode_prompt(engine.tokenizer, messages)
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=0,
        repetition_penalty=penalty,
        stop_ids=template.stop_ids(engine.tokenizer),
    )
    return engine.generate(ids, params).text


def wait_for(driver, condition, timeout=30.0, what=""):
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            state = driver.execute_script(
                "return document.body.dataset.state + ' / ' + $('status').textContent"
            )
            raise AssertionError(f"timed out waiting for {what} (page: {state})")
        time.sleep(0.01)


def set_field(driver, id_, value):
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]", id_, str(value))


def send(driver, text):
    """Type and send ``text``; return (texts seen while streaming, the final reply text)."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()
    last = "return [...document.querySelectorAll('.msg.assistant .content')].pop().textContent"
    state = "return document.body.dataset.state + ' ' + document.getElementById('status').textContent"
    started = wait_for(driver, lambda: driver.execute_script(state) in ("streaming writing…", "idle error"),
                       what="the reply to start")  # fmt: skip
    assert started != "idle error", driver.execute_script(last)
    seen = []
    while driver.execute_script("return document.body.dataset.state") == "streaming":
        seen.append(driver.execute_script(last))
        time.sleep(0.02)
    assert driver.find_element(By.ID, "status").text == "done"
    return seen, driver.execute_script(last)


def test_page_streams_a_reply_equal_to_the_api_and_resets(site, browser):
    from selenium.webdriver.common.by import By

    url, app = site
    browser.get(url + "/")
    wait_for(browser, lambda: browser.execute_script("return document.body.dataset.state") == "idle",
             what="the page to load")  # fmt: skip
    assert "page-run" in browser.find_element(By.ID, "model").text
    value = lambda id_: browser.find_element(By.ID, id_).get_attribute("value")  # noqa: E731
    assert value("max_tokens") == "128"  # the server's default (half the 256 context), not the page's own 256
    set_field(browser, "temperature", 0)
    set_field(browser, "repetition_penalty", 1.3)
    set_field(browser, "max_tokens", 24)
    set_field(browser, "system", "Be brief.")

    seen, reply = send(browser, "Judge my vow.")
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Judge my vow."}]
    assert reply == api_reply(app, conversation, 24)
    assert len(reply) > 5
    partial = [s for s in seen if s and s != reply]
    assert partial and all(reply.startswith(s) for s in partial)  # it grew in pieces, in order

    seen, second = send(browser, "And the wizards?")  # the page sends the whole conversation
    conversation += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And the wizards?"}]
    assert second == api_reply(app, conversation, 24)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg")) == 4

    browser.find_element(By.ID, "reset").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []
    seen, fresh = send(browser, "And the wizards?")
    assert fresh == api_reply(app, [conversation[0], conversation[-1]], 24)
