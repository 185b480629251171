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
requests are embedded together by continuous batching (`QueryBatcher`): with the model idle a
request goes to it at once; while a batch runs, the requests that arrive gather for the next one
(up to `serve.max_batch_size`), tokenized together. Replicas: `serve.replicas`, autoscaled up to
`serve.max_replicas` on `serve.target_ongoing_requests`. The HTTP ingress is Ray Serve's HAProxy
(`serve.ingress: haproxy`, the default): HAProxy passes each request straight to a replica's own
HTTP server; `proxy` is Serve's Python proxy. Errors are JSON in OpenAI's shape, naming the field
at fault; Redis down is a 503 with a sentence, and the next request after it is back succeeds.
"""

import asyncio
import logging
import socket
import time
from importlib import resources

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from prometheus_client import generate_latest
from ray import serve
from ray.exceptions import RayError

from pipelines.config import EmbedworkerSettings, ServeSettings
from pipelines.lexical.follower import LexicalIndexes
from pipelines.serving.batcher import QueryBatcher
from pipelines.serving.http_contract import (
    ApiError,
    check_api_key,
    check_dimensions,
    embedding_response,
    parse_embedding_request,
    parse_json,
    parse_search_request,
)
from pipelines.serving.hybrid import (
    LexicalNotReadyError,
    NoLexicalIndexError,
    choose_mode,
    lexical_possible,
    run_search,
)
from pipelines.serving.metrics import ServeMetrics, metrics_store
from pipelines.serving.reranker import reranker_from
from pipelines.serving.search import FilterError, RedisUnavailableError, Searcher, SearchError, UnknownIndexError
from workers.encoding.encoder import Encoder
from workers.errors import EmbedworkerError
from workers.secrets import read_secret
from workers.settings import model_slug

APP_NAME = "embedworker"
INDEX_CACHE_S = 2.0  # how long a replica trusts what an index name (or the alias) resolved to
log = logging.getLogger("embedworker.serve")
api = FastAPI(title="embedworker query service", docs_url=None, redoc_url=None, openapi_url=None)


def json_response(body: dict, status: int = 200) -> Response:
    """A JSON answer, serialized by orjson (the embeddings' floats are most of every response).
    Defined above the deployment: `serve.ingress` copies the module's names as they are then."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


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
        self.reranker = reranker_from(s)
        self.api_key = read_secret(s.serve.api_key, s.serve.api_key_file, "serve.api_key_file")
        self.models = {s.model.name, model_slug(s.model.name), self.encoder.model_id}
        self.metrics = ServeMetrics()
        self.store = metrics_store(APP_NAME)
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.lexical = LexicalIndexes(s, self._lexical_refreshed) if lexical_possible(s) else None
        self.batcher = QueryBatcher(self.encoder, s.serve.max_batch_size, s.serve.batch_wait_ms, self.metrics)
        self.page = resources.files("pipelines.serving").joinpath("static/search.html").read_bytes()

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
        embedded = await self.batcher.embed(q.texts, q.input_type, q.truncate, isinstance(body.get("input"), str))
        self.metrics.tokens.inc(embedded.tokens)
        return embedding_response(embedded.vectors, q.model, q.base64, embedded.tokens)

    async def _search(self, request: Request) -> dict:
        q = parse_search_request(parse_json(await request.body()), self.settings.serve)
        t0 = time.perf_counter()
        mode = choose_mode(q.mode, self.settings)
        vector = (await self.batcher.embed([q.query], "query", truncate=True)).vectors[0] if mode != "lexical" else None
        index, mode, hits = await asyncio.to_thread(self._resolve_and_search, q, vector, mode)
        return {"query": q.query, "index": index.base, "mode": mode,
                "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": [h.to_dict() for h in hits]}

    def _resolve_and_search(self, q, vector, mode: str):
        """In a worker thread (one hop per search): the index the name or alias means now, then its
        hits. Hybrid ranks by vectors alone ("dense") while the index's lexical side is first built."""
        index = self.searcher.resolve(q.index, INDEX_CACHE_S)
        lexical = self.lexical.get(index.name) if self.lexical is not None and mode != "dense" else None
        if mode == "lexical" and lexical is None:
            raise LexicalNotReadyError(f"the lexical index of {index.base} is being built from the lake; "
                                       "try again in a few seconds, or search in dense mode")
        used = "dense" if lexical is None else mode
        return index, used, run_search(used, q.query, vector, q.k, q.filter, q.ef, self.searcher, index, lexical,
                                       self.settings.search, self.reranker)

    def _lexical_refreshed(self, index: str, ok: bool) -> None:
        self.metrics.lexical_refreshes.labels(index, "ok" if ok else "failed").inc()

    async def _health(self, request: Request) -> dict:
        await asyncio.to_thread(self.searcher.ping)
        return {"status": "ok", "model": self.encoder.model_id, "dim": self.encoder.dim,
                "device": str(self.encoder.device), "redis": "ok",
                "lexical": self.lexical.lag() if self.lexical is not None else None}

    async def _models(self, request: Request) -> dict:
        return {"object": "list", "data": [{"id": model_slug(self.settings.model.name), "object": "model",
                                            "owned_by": "embedworker", "root": self.encoder.model_id}]}

    async def _answer(self, route: str, request: Request, handler, authenticate: bool = True) -> Response:
        """Run `handler`, answer its dict as JSON or its failure as an error in words; count both."""
        t0 = time.perf_counter()
        error: ApiError | None = None
        try:
            if authenticate:
                check_api_key(request.headers.get("authorization"), self.api_key)
            response = json_response(await handler(request))
        except ApiError as exc:
            error = exc
        except FilterError as exc:
            error = ApiError(400, str(exc), "filter", "invalid_filter")
        except NoLexicalIndexError as exc:
            error = ApiError(400, str(exc), "mode", "no_lexical_index")
        except LexicalNotReadyError as exc:
            error = ApiError(503, str(exc), "mode", "lexical_not_ready")
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
            response = json_response(error.body(), error.status)
        self.metrics.answered(route, response.status_code, time.perf_counter() - t0, error.code if error else None)
        if self.metrics.push_due():
            self.store.push.remote(self.replica, self.metrics.snapshot())
        return response


class ServeError(EmbedworkerError):
    """The service could not start: its port is taken, or its replicas failed to come up."""


def deployment_options(s: ServeSettings) -> dict:
    """Ray Serve options from `serve:` (the one place they are built)."""
    # OpenMP threads that wait sleep instead of spinning: a spinning torch thread takes the core the replica's
    # event loop needs to read the next requests (measured: 9.3 -> 7.1 CPU-ms per request at 128 clients).
    actor = {"num_gpus": s.num_gpus, "num_cpus": s.num_cpus, "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}}
    options: dict = {"ray_actor_options": actor,
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
