"""`embedworker serve`: query embeddings (OpenAI-compatible) and search over HTTP, on Ray Serve.

    POST /v1/embeddings   {"input": "금리 인상" | [...], "model": ..., "encoding_format": "float"|"base64",
                           "input_type": "query"|"passage", "truncate": false}
    POST /search          {"query": ..., "k": 10, "filter": ".lang == \\"ko\\"", "ef": null, "index": null}
    GET  /healthz         200 with the model loaded and Redis answering, else 503
    GET  /metrics         Prometheus text, summed over the replicas
    GET  /v1/models       the one model served
    GET  /                the search page (one static HTML file)

Each replica loads the model once through `Encoder.from_settings` (the same prefixes, pooling and
normalization as the worker that built the index) and searches through `Searcher`. Concurrent
requests are embedded together: `@serve.batch` gathers up to `serve.max_batch_size` requests,
waiting at most `serve.batch_wait_ms` for the first one's company; while a batch runs in the
model, the next one gathers; a request alone in its replica skips the wait. Replicas:
`serve.replicas`, autoscaled up to `serve.max_replicas` on `serve.target_ongoing_requests`.
Errors are JSON in OpenAI's shape, naming the field at fault; Redis down is a 503 with a
sentence, and the next request after it is back succeeds.
"""

import asyncio
import logging
import socket
import time
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import generate_latest
from ray import serve
from ray.exceptions import RayError

from pipelines.config import EmbedworkerSettings, ServeSettings
from pipelines.serving.http_contract import (
    ApiError,
    EmbeddingQuery,
    check_api_key,
    check_dimensions,
    check_lengths,
    embedding_response,
    parse_embedding_request,
    parse_json,
    parse_search_request,
)
from pipelines.serving.metrics import ServeMetrics, metrics_store
from pipelines.serving.search import FilterError, RedisUnavailableError, Searcher, SearchError, UnknownIndexError
from workers.encoding.encoder import Encoder
from workers.errors import EmbedworkerError
from workers.secrets import read_secret
from workers.settings import model_slug

APP_NAME = "embedworker"
INDEX_CACHE_S = 2.0  # how long a replica trusts what an index name (or the alias) resolved to
log = logging.getLogger("embedworker.serve")
api = FastAPI(title="embedworker query service", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="QueryService")
@serve.ingress(api)
class QueryService:
    """One replica: the model, a Searcher, its metrics. Built by Ray Serve on a replica actor."""

    def __init__(self, settings: EmbedworkerSettings):
        """Called by Ray Serve when it starts the replica: loads the model and connects (nothing is
        sent to Redis yet). A failure here (a model that cannot load) fails the deployment, which
        `start_service` reports in a sentence."""
        s = settings
        self.settings = s
        self.encoder = Encoder.from_settings(s.model, s.batching)
        self.searcher = Searcher(s, encoder=self.encoder, retry_settings=s.redis.model_copy(update={"retries": 1}))
        self.searcher.connect()
        self.api_key = read_secret(s.serve.api_key, s.serve.api_key_file, "serve.api_key_file")
        self.models = {s.model.name, model_slug(s.model.name), self.encoder.model_id}
        self.metrics = ServeMetrics()
        self.store = metrics_store(APP_NAME)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.embed_batch.set_max_batch_size(s.serve.max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(s.serve.batch_wait_ms / 1000)
        self.page = resources.files("pipelines.serving").joinpath("static/search.html").read_bytes()
        self._embedding = 0  # requests between the start and the end of `embed`

    # ---- routes -----------------------------------------------------------------------------

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self._answer("/v1/embeddings", request, self._embeddings)

    @api.post("/search")
    async def search(self, request: Request) -> Response:
        return await self._answer("/search", request, self._search)

    @api.get("/healthz")
    async def healthz(self, request: Request) -> Response:
        return await self._answer("/healthz", request, self._health, authenticate=False)

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        return await self._answer("/v1/models", request, self._models)

    @api.get("/metrics")
    async def metrics_text(self) -> Response:
        """The sum over the replicas; this replica's own counts alone if the store does not answer
        (it restarts by itself; the sum is back at the next scrape)."""
        try:
            self.store.push.remote(self.replica, self.metrics.snapshot())
            text = await asyncio.wait_for(self.store.render.remote(), timeout=5)
        except (RayError, TimeoutError) as exc:
            log.warning("the metrics store did not answer (%s); serving this replica's metrics alone", exc)
            text = generate_latest(self.metrics.registry)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.get("/")
    async def page_html(self) -> Response:
        return HTMLResponse(self.page)

    # ---- the work ---------------------------------------------------------------------------

    async def _embeddings(self, request: Request) -> dict:
        body = parse_json(await request.body())
        q = parse_embedding_request(body, self.settings.serve, self.models)
        check_dimensions(body, self.encoder.dim)
        ids = await asyncio.to_thread(self._token_ids, q, isinstance(body.get("input"), str))
        vectors = await self.embed(ids, q.input_type)
        tokens = sum(len(x) for x in ids)
        self.metrics.tokens.inc(tokens)
        return embedding_response(vectors, q.model, q.base64, tokens)

    def _token_ids(self, q: EmbeddingQuery, single: bool) -> list[list[int]]:
        """Each text tokenized once, whole: its length is checked (an ApiError if over
        model.max_tokens without `truncate`) and the ids go to the model as they are; only a text
        cut on request is tokenized again, truncated as the worker truncates."""
        tokenizer = self.encoder.tokenizer
        prefix = self.encoder.query_prefix if q.input_type == "query" else self.encoder.document_prefix
        ids = tokenizer.tokenize_whole(q.texts, prefix)
        check_lengths([len(x) for x in ids], self.encoder.max_tokens, single, q.truncate)
        long = [i for i, x in enumerate(ids) if len(x) > self.encoder.max_tokens]
        if long:
            cut = tokenizer.tokenize([q.texts[i] for i in long], prefix, chunked=False).ids
            for i, x in zip(long, cut):
                ids[i] = x
        return ids

    async def _search(self, request: Request) -> dict:
        q = parse_search_request(parse_json(await request.body()), self.settings.serve)
        t0 = time.perf_counter()
        index = await asyncio.to_thread(self.searcher.resolve, q.index, INDEX_CACHE_S)
        ids = await asyncio.to_thread(self.encoder.tokenizer.tokenize, [q.query], self.encoder.query_prefix, False)
        vector = (await self.embed(ids.ids, "query"))[0]
        hits = await asyncio.to_thread(self.searcher.search_vector, vector, q.k, q.filter, q.ef, index)
        return {"query": q.query, "index": index.base, "took_ms": round((time.perf_counter() - t0) * 1000, 2),
                "hits": [h.to_dict() for h in hits]}

    async def _health(self, request: Request) -> dict:
        await asyncio.to_thread(self.searcher.ping)
        return {"status": "ok", "model": self.encoder.model_id, "dim": self.encoder.dim,
                "device": str(self.encoder.device), "redis": "ok"}

    async def _models(self, request: Request) -> dict:
        return {"object": "list", "data": [{"id": model_slug(self.settings.model.name), "object": "model",
                                            "owned_by": "embedworker", "root": self.encoder.model_id}]}

    async def embed(self, ids: list[list[int]], input_type: str) -> np.ndarray:
        """Vectors for one request's tokenized texts. Alone in the replica, the request goes to the
        model at once; with others in flight it joins a batch (waiting at most serve.batch_wait_ms),
        so a lone client pays no batching wait and concurrent ones share forward passes."""
        self._embedding += 1
        try:
            if self._embedding == 1:
                return (await asyncio.to_thread(self._encode_requests, [(ids, input_type)]))[0]
            return await self.embed_batch((ids, input_type))
        finally:
            self._embedding -= 1

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # both set from serve: in __init__
    async def embed_batch(self, requests: list[tuple[list[list[int]], str]]) -> list[np.ndarray]:
        """The batched path of `embed` (in a thread, so that the next batch gathers meanwhile)."""
        return await asyncio.to_thread(self._encode_requests, requests)

    def _encode_requests(self, requests: list[tuple[list[list[int]], str]]) -> list[np.ndarray]:
        """Each request's vectors, the texts of all of them (queries and passages: the prefixes are
        in the ids) in one encoder call. Raises what the encoder raises (a 500 in words)."""
        self.metrics.batch_requests.observe(len(requests))
        self.metrics.batch_inputs.observe(sum(len(ids) for ids, _ in requests))
        for ids, kind in requests:
            self.metrics.inputs.labels(kind).inc(len(ids))
        vectors = self.encoder.encode_token_ids([x for ids, _ in requests for x in ids])
        ends = np.cumsum([len(ids) for ids, _ in requests])
        return np.split(vectors, ends[:-1])

    async def _answer(self, route: str, request: Request, handler, authenticate: bool = True) -> Response:
        """Run `handler`, answer its dict as JSON or its failure as an error in words; count both."""
        t0 = time.perf_counter()
        error: ApiError | None = None
        try:
            if authenticate:
                check_api_key(request.headers.get("authorization"), self.api_key)
            response = JSONResponse(await handler(request))
        except ApiError as exc:
            error = exc
        except FilterError as exc:
            error = ApiError(400, str(exc), "filter", "invalid_filter")
        except UnknownIndexError as exc:
            error = ApiError(404, str(exc), "index", "index_not_found")
        except RedisUnavailableError as exc:
            error = ApiError(503, f"the vector index is unavailable: {exc}", None, "redis_unavailable")
        except SearchError as exc:
            error = ApiError(502, str(exc), None, "search_failed")
        except Exception as exc:  # noqa: BLE001 - any other failure is a 500 in words, never a traceback
            log.exception("%s failed", route)
            error = ApiError(500, f"the service failed on this request: {type(exc).__name__}: {exc}", None, "internal")
        if error is not None:
            response = JSONResponse(error.body(), status_code=error.status)
        self.metrics.answered(route, response.status_code, time.perf_counter() - t0, error.code if error else None)
        if self.metrics.push_due():
            self.store.push.remote(self.replica, self.metrics.snapshot())
        return response


class ServeError(EmbedworkerError):
    """The service could not start: its port is taken, or its replicas failed to come up."""


def deployment_options(s: ServeSettings) -> dict:
    """Ray Serve options from `serve:` (the one place they are built)."""
    options: dict = {"ray_actor_options": {"num_gpus": s.num_gpus, "num_cpus": s.num_cpus},
                     "max_ongoing_requests": s.max_ongoing_requests}
    if s.max_replicas is not None and s.max_replicas > s.replicas:
        options["autoscaling_config"] = {"min_replicas": s.replicas, "initial_replicas": s.replicas,
                                         "max_replicas": s.max_replicas,
                                         "target_ongoing_requests": s.target_ongoing_requests}
    else:
        options["num_replicas"] = s.replicas
    return options


def application(settings: EmbedworkerSettings):
    """The Ray Serve application for these settings (replicas, resources, batching from `serve:`)."""
    return QueryService.options(**deployment_options(settings.serve)).bind(settings)


def build_app(args: dict):
    """An application builder for KubeRay's RayService and `serve run`: `import_path:
    pipelines.serving.service:build_app`, `args: {config: /etc/embedworker/config.yaml}`. The HTTP host and
    port are then the cluster's Serve settings, not serve.host/serve.port."""
    from pipelines.config import load_settings, resolve_model

    settings, note = resolve_model(load_settings(args["config"]))
    if note:
        log.warning(note)
    return application(settings)


def check_port_free(host: str, port: int, wait_s: float = 10.0) -> None:
    """Before a local Ray starts the HTTP proxy: a taken port is a sentence, not a proxy that
    restarts forever. Waits up to `wait_s` for it (the proxy of a service killed a moment ago
    lets it go within seconds). Raises ServeError."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}); another service holds it: "
                                     "choose another with --port or serve.port") from None
        time.sleep(0.5)


def start_service(settings: EmbedworkerSettings, host: str, port: int) -> None:
    """Start Serve (HTTP on host:port) on the configured Ray and deploy the application; returns
    once every replica has loaded the model. Raises ServeError."""
    from pipelines.ray_session import init_ray

    read_secret(settings.serve.api_key, settings.serve.api_key_file, "serve.api_key_file")  # here, in words
    if not settings.ray.address:
        check_port_free(host, port)
    init_ray(settings)
    serve.start(http_options={"host": host, "port": port})
    app = application(settings)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        raise ServeError(f"the query service's replicas did not start: {str(exc).strip().splitlines()[-1]}") from None


def stop_service(settings: EmbedworkerSettings) -> None:
    """Remove the application from a cluster; a local Ray this process started goes down whole
    (at once: Serve's own shutdown waits out its controller, up to 30 s)."""
    import ray

    if settings.ray.address:
        serve.delete(APP_NAME)
    ray.shutdown()
