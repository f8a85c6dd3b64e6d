"""The HTTP API: health, metrics, feeds and sessions (FastAPI, run by uvicorn on our loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..core.account_messages import AccountMessages
from ..core.authz import Authorizer
from ..core.consent import ConsentService
from ..core.federation_keys import KeyLookups
from ..core.feeds import FeedHub
from ..core.histogram import Histogram
from ..core.owner_feeds import OwnerFeeds
from ..core.session_service import SessionService
from . import admin as admin_routes
from . import consent as consent_routes
from . import console as console_routes
from . import federation as federation_routes
from . import feeds, problems
from . import keys as key_routes
from . import messages as message_routes
from . import sessions as session_routes
from .body_limit import DEFAULT_LIMIT, BodyLimit
from .federation import FederationEndpoint
from .guard import Identify

Labelled = dict[str, tuple[str, str, dict[str, float]]]
"""Metrics with one label: {name: ("counter" | "gauge", label name, {label value: value})}."""


Histograms = dict[str, tuple[str, Histogram]]
"""{name: ("histogram" | "gaugehistogram", its buckets)}: a histogram counts what happened
since the start, a gauge histogram what is now (queue depths)."""


class _Collector(Collector):
    def __init__(
        self,
        read: Callable[[], dict[str, tuple[str, float]]],
        labelled: Callable[[], Labelled] | None = None,
        histograms: Callable[[], Histograms] | None = None,
    ) -> None:
        self._read = read
        self._labelled = labelled
        self._histograms = histograms

    def collect(self) -> Iterable[Metric]:
        for name, (kind, value) in self._read().items():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"tidings_{name}", name.replace("_", " "), value=value)
        if self._labelled is not None:
            for name, (kind, label, values) in self._labelled().items():
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                metric = family(f"tidings_{name}", name.replace("_", " "), labels=[label])
                for label_value, value in values.items():
                    metric.add_metric([label_value], value)
                yield metric
        if self._histograms is not None:
            for name, (kind, histogram) in self._histograms().items():
                buckets = histogram.cumulative()
                if kind == "gaugehistogram":
                    yield GaugeHistogramMetricFamily(
                        f"tidings_{name}",
                        name.replace("_", " "),
                        buckets=buckets,
                        gsum_value=histogram.total,
                    )
                else:
                    yield HistogramMetricFamily(
                        f"tidings_{name}",
                        name.replace("_", " "),
                        buckets=buckets,
                        sum_value=histogram.total,
                    )


def health() -> dict[str, str]:
    """The body of ``/healthz``."""
    return {"status": "ok", "version": __version__}


def metrics_page(
    read_metrics: Callable[[], dict[str, tuple[str, float]]],
    labelled: Callable[[], Labelled] | None = None,
    histograms: Callable[[], Histograms] | None = None,
) -> Callable[[], bytes]:
    """Renders ``/metrics`` (Prometheus text format) from ``read_metrics`` (and the
    ``labelled`` metrics, per peer say) at each call."""
    registry = CollectorRegistry()
    registry.register(_Collector(read_metrics, labelled, histograms))
    return lambda: generate_latest(registry)


METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"


def create_app(
    read_metrics: Callable[[], dict[str, tuple[str, float]]],
    hub: FeedHub,
    authz: Authorizer,
    sessions: SessionService | None = None,
    max_body: int = DEFAULT_LIMIT,
    owner_feeds: OwnerFeeds | None = None,
    identify: Identify | None = None,
    consent: ConsentService | None = None,
    capability_url: Callable[[str], str] | None = None,
    federation: FederationEndpoint | None = None,
    labelled_metrics: Callable[[], Labelled] | None = None,
    histograms: Callable[[], Histograms] | None = None,
    admin: admin_routes.AdminSources | None = None,
    console: console_routes.Console | None = None,
    messages: AccountMessages | None = None,
    keys: KeyLookups | None = None,
) -> FastAPI:
    """``read_metrics`` returns {name: ("counter" | "gauge", value)} at scrape time;
    ``owner_feeds`` and ``identify`` (an API key's identity) add the accounts' own feeds;
    ``consent`` with ``identify`` and ``capability_url`` adds the consent routes;
    ``federation`` the routes other domains' servers call; ``admin`` with ``identify`` the
    admin routes; ``console`` the web console at ``/`` and ``/console/``; ``messages`` with
    ``identify`` the accounts' ``POST /messages``, ``keys`` with it the key directory."""
    app = FastAPI(title="Tidings", version=__version__)
    app.add_middleware(BodyLimit, limit=max_body)
    problems.install(app)
    app.include_router(feeds.router(hub, authz, owner_feeds, identify))
    if sessions is not None and identify is not None:
        app.include_router(session_routes.router(sessions, authz, identify))
    if messages is not None and identify is not None:
        app.include_router(message_routes.router(messages, authz, identify))
    if keys is not None and identify is not None:
        app.include_router(key_routes.router(keys, authz, identify))
    if consent is not None and identify is not None and capability_url is not None:
        app.include_router(consent_routes.router(consent, authz, identify, capability_url))
    if federation is not None:
        app.include_router(federation_routes.router(federation, authz))
    if admin is not None and identify is not None:
        app.include_router(admin_routes.router(admin, authz, identify))
    if console is not None:
        app.include_router(console_routes.router(console))
    render_metrics = metrics_page(read_metrics, labelled_metrics, histograms)

    @app.get("/healthz", summary="Liveness: 200 while the server is serving")
    async def healthz() -> dict[str, str]:
        return health()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(render_metrics(), media_type=METRICS_MEDIA_TYPE)

    return app
