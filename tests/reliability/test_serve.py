"""`embedworker serve` against the real thing: the CLI in its own process (a local Ray, Ray Serve's
HTTP proxy), a private Redis holding an index of news documents, the official `openai` client,
and Debian's chromium driving the search page. One service for the module; the last tests stop
Redis under it, and kill it with -9 and start it again on the same port."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml

from pipelines.serving.ingress import free_port
from pipelines.serving.search import Searcher
from tests.helpers import make_settings, wait_until
from tests.reliability.conftest import service
from tests.support.models import index_titles
from workers.encoding.encoder import Encoder
from workers.settings import model_slug

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-5c1d9e07"  # fixed: test ids carry it, and every process collecting them must agree
REDIS_PORT = 16392
DOCS = [  # (id, title, lang, published_at, source)
    ("ko-1", "한국은행 기준금리 동결 결정", "ko", 1_790_000_000, "연합뉴스"),
    ("ko-2", "반도체 수출 석 달 연속 증가", "ko", 1_790_100_000, "KBS"),
    ("ko-3", "서울 아파트 전셋값 상승세 지속", "ko", 1_790_200_000, "매일경제"),
    ("ko-4", "프로야구 개막전 만원 관중", "ko", 1_790_300_000, "연합뉴스"),
    ("en-1", "Central bank holds interest rates steady", "en", 1_790_050_000, "Reuters"),
    ("en-2", "Chip exports rise for a third month", "en", 1_790_150_000, "AP"),
    ("en-3", "Housing rents keep climbing in Seoul", "en", 1_790_250_000, "The Guardian"),
]


GLYPHS_DIFFER = """
const draw = (text) => {
  const canvas = document.createElement("canvas");
  canvas.width = 120; canvas.height = 40;
  const ctx = canvas.getContext("2d");
  ctx.font = "28px " + getComputedStyle(document.querySelector(".title")).fontFamily;
  ctx.fillText(text, 4, 30);
  return canvas.toDataURL();
};
return draw(arguments[0]) !== draw(arguments[1]);
"""



class Service:
    """`embedworker serve` in its own process group (so the local Ray it starts goes with it)."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.groups: list[int] = []
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "serve", "-c", str(self.config)],
                                            cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(self.process.pid)
        wait_until(self._healthy, timeout=240, interval=1, message="the service to answer /healthz",
                   diagnose=lambda: self.log.read_text()[-3000:])
        return self

    def _healthy(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return requests.get(self.url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def answers(self) -> bool:
        try:
            requests.get(self.url + "/healthz", timeout=2)
            return True
        except requests.RequestException:
            return False

    def post(self, path: str, body, key: str | None = KEY, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if isinstance(body, (dict, list)):
            return requests.post(self.url + path, json=body, headers=headers, timeout=60, **kwargs)
        return requests.post(self.url + path, data=body, headers=headers, timeout=60, **kwargs)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def kill_all(self) -> None:
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("serve")
    unique = uuid.uuid4().hex[:10]
    run_dir = tmp / "redis-run"
    port = free_port()
    settings = make_settings("localhost:9092", f"redis://127.0.0.1:{REDIS_PORT}/0", tiny_model_dir, tmp, unique,
                             model={"max_tokens": 64}, ray={"num_cpus": 2},
                             serve={"port": port, "max_inputs": 8, "batch_wait_ms": 20, "num_cpus": 0.5})
    data = settings.model_dump(mode="json")
    data["serve"]["api_key"] = KEY
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    svc = Service(config, port, tmp / "serve.log")
    service("redis.sh", "start", run_dir, REDIS_PORT=REDIS_PORT, REDIS_PERSIST=1)
    try:  # from here on, whatever fails, the private Redis and the service go
        encoder = Encoder.from_settings(settings.model, settings.batching)
        index_titles(settings, encoder, [{"id": d, "title": title, "url": f"https://news.example/{d}",
                                          "source": source, "lang": lang, "published_at": at}
                                         for d, title, lang, at, source in DOCS], lake=True)
        svc.start()
        searcher = Searcher(settings, encoder=encoder)
        searcher.setup()
        yield svc, settings, encoder, searcher, run_dir
        if svc.process.poll() is None:
            assert svc.stop() == 0, svc.log.read_text()[-3000:]
            # a clean stop: no native stack of Ray's failure handler before the last line
            assert "SIGTERM received" not in svc.log.read_text() and "stopped" in svc.log.read_text()
    finally:
        svc.kill_all()
        service("redis.sh", "stop", run_dir, REDIS_PORT=REDIS_PORT)


def test_openai_client_gets_the_encoders_vectors(served):
    import openai

    svc, settings, encoder, _, _ = served
    client = openai.OpenAI(base_url=svc.url + "/v1", api_key=KEY, max_retries=0)
    texts = ["금리 인상 전망", "semiconductor exports", "서울 날씨"]
    slug = model_slug(settings.model.name)
    assert [m.id for m in client.models.list()] == [slug]
    for fmt in ({}, {"encoding_format": "float"}):  # by default the client asks for base64 and decodes it
        got = client.embeddings.create(model=slug, input=texts, **fmt)
        assert [d.index for d in got.data] == [0, 1, 2]
        assert np.allclose(np.array([d.embedding for d in got.data]), encoder.encode_queries(texts), atol=1e-5)
        assert got.usage.prompt_tokens == sum(len(x) for x in encoder.tokenizer.tokenize_whole(texts, encoder.query_prefix))
    passages = client.embeddings.create(model=slug, input="반도체 수출", extra_body={"input_type": "passage"})
    assert np.allclose(passages.data[0].embedding, encoder.encode_documents(["반도체 수출"])[0], atol=1e-5)
    raw = svc.post("/v1/embeddings", {"input": "x", "encoding_format": "base64"}).json()
    assert np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4").shape == (encoder.dim,)
    with pytest.raises(openai.AuthenticationError, match="wrong"):
        openai.OpenAI(base_url=svc.url + "/v1", api_key="not-the-key", max_retries=0).embeddings.create(
            model=slug, input="x")


def test_search_answers_what_the_cli_prints(served):
    svc, settings, _, searcher, _ = served
    for body, expected in [({"query": "기준금리", "k": 5}, searcher.search("기준금리", k=5)),
                           ({"query": "exports", "k": 3, "filter": '.lang == "ko"'},
                            searcher.search("exports", k=3, filter='.lang == "ko"')),
                           ({"query": "rents", "k": 7, "ef": 50, "index": model_slug(settings.model.name)},
                            searcher.search("rents", k=7, ef=50))]:
        answer = svc.post("/search", {**body, "mode": "dense"})
        assert answer.status_code == 200, answer.text
        hits = answer.json()["hits"]
        assert [h["id"] for h in hits] == [h.id for h in expected]
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-4)
        assert hits[0].keys() == expected[0].to_dict().keys()
    ko = svc.post("/search", {"query": "exports", "k": 10, "filter": '.lang == "ko"', "mode": "dense"}).json()["hits"]
    assert {h["lang"] for h in ko} == {"ko"} and len(ko) == 4
    assert {h["title"] for h in ko} == {title for _, title, lang, *_ in DOCS if lang == "ko"}


def test_words_and_vectors_fused_from_the_lake_as_the_cli_ranks_them(served, capsys):
    """The replica builds its lexical index from the lake by itself (503 in words until then),
    filters both sides with one expression, explains each hit, and ranks as `search --json` does."""
    svc, settings, *_ = served

    def lexical_ready():
        answer = svc.post("/search", {"query": "기준금리 동결", "mode": "lexical"})
        assert answer.status_code in (200, 503), answer.text
        return answer.status_code == 200 and answer

    words = wait_until(lexical_ready, timeout=60, interval=0.5, message="the lexical index to be built").json()
    assert words["mode"] == "lexical" and [h["id"] for h in words["hits"]] == ["ko-1"]
    assert words["hits"][0]["explain"]["lexical_rank"] == 1 and words["hits"][0]["source"] == "연합뉴스"
    assert svc.post("/search", {"query": "기준금리", "mode": "lexical", "filter": '.lang == "en"'}).json()["hits"] == []
    fused = svc.post("/search", {"query": "반도체 수출", "k": 5}).json()
    assert fused["mode"] == "hybrid" and fused["hits"][0]["id"] == "ko-2"
    explain = fused["hits"][0]["explain"]
    assert explain["lexical_rank"] == 1 and explain["fused"] == fused["hits"][0]["score"]
    health = requests.get(svc.url + "/healthz", timeout=5).json()
    assert health["lexical"][model_slug(settings.model.name)]["documents"] == len(DOCS)
    metrics = requests.get(svc.url + "/metrics", timeout=10).text
    assert f'embedworker_serve_lexical_refreshes_total{{index="{model_slug(settings.model.name)}",result="ok"}}' in metrics

    from pipelines.cli.main import main

    assert main(["search", "-c", str(svc.config), "-k", "5", "--json", "반도체 수출"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(h["id"], h["score"]) for h in printed] == [(h["id"], h["score"]) for h in fused["hits"]]


@pytest.mark.parametrize("path, body, key, status, param", [
    ("/v1/embeddings", {"input": ""}, KEY, 400, "input"),
    ("/v1/embeddings", {"input": []}, KEY, 400, "input"),
    ("/v1/embeddings", {"input": ["ok", "   "]}, KEY, 400, "input[1]"),
    ("/v1/embeddings", {"input": [[101, 102]]}, KEY, 400, "input[0]"),
    ("/v1/embeddings", {"input": ["ok", "word " * 200]}, KEY, 400, "input[1]"),   # over max_tokens (64)
    ("/v1/embeddings", {"input": ["x"] * 9}, KEY, 400, "input"),                  # serve.max_inputs 8
    ("/v1/embeddings", {"input": "x", "model": "gpt-4"}, KEY, 404, "model"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, KEY, 400, "encoding_format"),
    ("/v1/embeddings", {"input": "x", "dimensions": 12}, KEY, 400, "dimensions"),
    ("/v1/embeddings", {"input": "x", "input_type": "title"}, KEY, 400, "input_type"),
    ("/v1/embeddings", b"{not json", KEY, 400, "body"),
    ("/v1/embeddings", {"input": "x"}, None, 401, "Authorization"),
    ("/v1/embeddings", {"input": "x"}, "wrong", 401, "Authorization"),
    ("/search", {"query": ""}, KEY, 400, "query"),
    ("/search", {"query": "x", "k": 0}, KEY, 400, "k"),
    ("/search", {"query": "x", "k": 1001}, KEY, 400, "k"),
    ("/search", {"query": "x", "k": "5"}, KEY, 400, "k"),
    ("/search", {"query": "x", "filter": ".lang == "}, KEY, 400, "filter"),
    ("/search", {"query": "x", "filter": "(.lang == 'ko'"}, KEY, 400, "filter"),
    ("/search", {"query": "x", "index": "no-such-index"}, KEY, 404, "index"),
    ("/search", {"query": "x", "index": "current"}, KEY, 404, "index"),           # no alias set
    ("/search", {"query": "x", "limit": 3}, KEY, 400, "limit"),
    ("/search", {"query": "x", "mode": "fuzzy"}, KEY, 400, "mode"),
    ("/search", [1, 2], KEY, 400, "body"),
    ("/search", {"query": "x"}, None, 401, "Authorization"),
])
def test_bad_requests_answer_4xx_naming_the_field(served, path, body, key, status, param):
    svc = served[0]
    answer = svc.post(path, body, key=key)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in answer.text


def test_too_long_input_is_embedded_when_truncation_is_asked(served):
    svc, _, encoder, _, _ = served
    long_text = "word " * 200
    answer = svc.post("/v1/embeddings", {"input": long_text, "truncate": True})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["data"][0]["embedding"], encoder.encode_queries([long_text])[0], atol=1e-5)
    assert answer.json()["usage"]["prompt_tokens"] == encoder.max_tokens


def test_concurrent_requests_are_batched_and_counted(served):
    svc, _, encoder, _, _ = served
    before = _metric(svc, "embedworker_serve_batch_requests_count")
    texts = [f"질문 {i} about rates" for i in range(64)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda t: svc.post("/v1/embeddings", {"input": t}), texts))
    assert all(a.status_code == 200 for a in answers)
    got = np.array([a.json()["data"][0]["embedding"] for a in answers])
    assert np.allclose(got, encoder.encode_queries(texts), atol=1e-5)  # nobody got a neighbour's vector
    batches = _metric(svc, "embedworker_serve_batch_requests_count") - before
    assert batches < len(texts), f"{len(texts)} concurrent requests took {batches} batches: nothing was batched"
    text = requests.get(svc.url + "/metrics", timeout=10).text
    assert 'embedworker_serve_requests_total{code="200",route="/v1/embeddings"}' in text
    assert "embedworker_serve_replicas 1.0" in text


def test_search_page_in_a_real_browser(served):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    svc, _, _, searcher, _ = served
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=DriverService(driver_path), options=options)
    try:
        browser.get(svc.url + "/")
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "query").send_keys("반도체 수출 증가")
        browser.find_element(By.ID, "go").click()  # no key yet: the page asks for one
        wait.until(lambda b: "API key" in b.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "api-key").send_keys(KEY)
        Select(browser.find_element(By.ID, "lang")).select_by_value("ko")
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results .hit .title"))
        titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .hit .title")]
        expected = searcher.search("반도체 수출 증가", k=10, filter='.lang == "ko"')
        assert titles == [h.title for h in expected] and len(titles) == 4
        link = browser.find_element(By.CSS_SELECTOR, "#results .hit a.title")
        assert link.get_attribute("href").startswith("https://news.example/")
        assert "results from" in browser.find_element(By.ID, "status").text
        if subprocess.run(["fc-list", ":lang=ko"], capture_output=True, text=True).stdout.strip():
            # Hangul is drawn with real glyphs: its pixels differ from a character no font has (a box)
            assert browser.execute_script(GLYPHS_DIFFER, "한국", "\ue000\ue001"), "Korean renders as boxes"
    finally:
        browser.quit()


def test_redis_down_is_a_503_in_words_and_the_service_recovers(served):
    svc, _, _, _, run_dir = served
    service("redis.sh", "stop", run_dir, REDIS_PORT=REDIS_PORT)
    try:
        down = svc.post("/search", {"query": "기준금리"})
        assert down.status_code == 503, down.text
        assert "Redis" in down.json()["error"]["message"] and "Traceback" not in down.text
        assert requests.get(svc.url + "/healthz", timeout=30).status_code == 503
        assert svc.post("/v1/embeddings", {"input": "금리"}).status_code == 200  # the model needs no Redis
    finally:
        service("redis.sh", "start", run_dir, REDIS_PORT=REDIS_PORT, REDIS_PERSIST=1)
    wait_until(lambda: svc.post("/search", {"query": "기준금리"}).status_code == 200, timeout=30,
               message="search to work again once Redis is back")
    assert len(svc.post("/search", {"query": "기준금리", "k": 10}).json()["hits"]) == len(DOCS)


def test_killed_with_9_then_started_again_on_the_same_port(served):
    svc = served[0]
    os.kill(svc.process.pid, signal.SIGKILL)
    svc.process.wait(30)
    killed_at = time.monotonic()
    wait_until(lambda: not svc.answers(), timeout=60, message="the killed service's HTTP proxy to go with it")
    gone_s = time.monotonic() - killed_at
    svc.start()  # on the same port
    print(f"\nkill -9 of `embedworker serve`: its proxy gone after {gone_s:.1f} s, served again after "
          f"{time.monotonic() - killed_at:.1f} s")
    answer = svc.post("/search", {"query": "기준금리", "k": 3})
    assert answer.status_code == 200 and len(answer.json()["hits"]) == 3


def _metric(svc: Service, name: str) -> float:
    text = requests.get(svc.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))
