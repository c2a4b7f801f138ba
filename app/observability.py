"""Structured JSON logs and Prometheus metrics.

Every request logs one JSON line on the `app.access` logger (route, method, model, images, status,
duration_ms, request_id). Metrics live in a registry of their own per app, so several apps in one
process (tests) never share counters. `Metrics` is also the batcher's `BatchObserver`.
With several workers under `ae-serve` (app.process.server), prometheus_client's multiprocess mode is on
(`PROMETHEUS_MULTIPROC_DIR`): every worker writes its numbers to files there, and /metrics, whichever
worker answers, adds up those of all workers, so counters never seem to reset between scrapes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOG_FIELDS = (
    "request_id",
    "method",
    "route",
    "path",
    "model",
    "images",
    "status",
    "duration_ms",
    "error_type",
    "refused",  # how many requests one summary line of admission-control refusals stands for
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any of LOG_FIELDS passed as `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": os.getpid(),  # which worker wrote it (several share one log)
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """Send the `app` loggers to stderr as JSON lines (once per process)."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if not any(getattr(handler, "_ae_json", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._ae_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    skip_unused_record_fields()


def skip_unused_record_fields() -> None:
    """Stop `logging` from collecting what our JSON lines never show: the caller's file and line (a
    walk up the stack), thread, process and process name. This is the "Optimization" section of the
    logging HOWTO; every request logs a line, and these lookups were half of its cost."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


class Metrics:
    """The service's Prometheus metrics; implements app.engine.scheduling.batching.BatchObserver."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise to a scrape
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ae_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ae_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("ae_images", "images received by route", ["route"], registry=self.registry)
        self.stage_seconds = Histogram(
            "ae_stage_duration_seconds",
            "latency per stage: decode and encode (per route), queue and model (per batcher)",
            ["stage", "name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "ae_batcher_queue_depth",
            "images waiting for a forward pass",
            ["batcher"],
            registry=self.registry,
            multiprocess_mode="livesum",  # across workers: the sum over the living ones
        )
        self.batch_size = Histogram(
            "ae_batch_size",
            "images per forward pass",
            ["batcher"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )

        # `labels()` validates and locks on every call; a request observes half a dozen series, so
        # each labelled series is looked up once and kept (the label values are bounded: routes, models).
        self._stage = lru_cache(maxsize=None)(self.stage_seconds.labels)
        self._requests = lru_cache(maxsize=None)(self.requests.labels)
        self._request_seconds = lru_cache(maxsize=None)(self.request_seconds.labels)
        self._images = lru_cache(maxsize=None)(self.images.labels)
        self._batch_size = lru_cache(maxsize=None)(self.batch_size.labels)
        self._queue_depth = lru_cache(maxsize=None)(self.queue_depth.labels)

    # -- BatchObserver -------------------------------------------------------------------------------

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self._stage("queue", model).observe(seconds)

    def observe_batch(self, model: str, batch_size: int, seconds: float) -> None:
        self._batch_size(model).observe(batch_size)
        self._stage("model", model).observe(seconds)

    def observe_queue_depth(self, model: str, images: int) -> None:
        self._queue_depth(model).set(images)

    # -- the HTTP side -------------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int | str, seconds: float, images: int | None) -> None:
        """One request: HTTP (status a number) or gRPC (method GRPC, status the code's name, app.oip)."""
        self._requests(route, method, status).inc()
        self._request_seconds(route, method, status).observe(seconds)
        if images:
            self._images(route).inc(images)

    @contextmanager
    def stage(self, stage: str, name: str) -> Iterator[None]:
        """Time a block as one stage (decode, encode) of route `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._stage(stage, name).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The text exposition: this app's metrics, or in multiprocess mode those of every worker."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            every_worker = CollectorRegistry()
            MultiProcessCollector(every_worker)
            return generate_latest(every_worker)
        return generate_latest(self.registry)
