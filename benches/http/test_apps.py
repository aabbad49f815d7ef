"""The HTTP benchmark's apps answer every row's route, through their frameworks' test clients.

Fast and without wrk: it keeps the benchmark from rotting between runs (an
app that no longer imports, a route a row names that is gone, a limiter
whose headers vanished). Speed is never asserted. Run in a process of its
own: the Django app configures Django's settings for the process.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "apps")]

from rows import ROWS, Row  # noqa: E402
from servers import start_redis  # noqa: E402

# Starlette 1.x prefers httpx2 for its TestClient; httpx still works (as in flux-py's tests).
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

MEASURED = [(framework, row) for framework, rows in ROWS.items() for row in rows if row.pending is None]


@pytest.fixture(scope="module")
def apps():
    """The app modules, imported against a redis-server of the test's own."""
    redis = start_redis(cpus=None)
    os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis.port}/0"
    try:
        yield {name: importlib.import_module(f"{name}_app") for name in ROWS}
    finally:
        del os.environ["BENCH_REDIS_URL"]
        redis.stop()


def get(apps, framework: str, row: Row):
    """``row``'s route answered by its app's variant holding that route alone, as its
    server does, through the framework's test client."""
    module = apps[framework]
    if framework == "fastapi":
        from fastapi.testclient import TestClient

        return TestClient(module.build(row.variant, row.path)).get(row.path)
    if framework == "flask":
        return module.build(row.variant, row.path).test_client().get(row.path)
    from django.test import Client, override_settings

    urls = types.ModuleType("urls")
    urls.urlpatterns = module.urls_for(row.path)
    with override_settings(ROOT_URLCONF=urls, **module.variant_settings(row.variant)):
        return Client().get(row.path)


@pytest.mark.parametrize(
    ("framework", "row"), MEASURED, ids=[f"{framework}:{row.label}" for framework, row in MEASURED]
)
def test_route_answers(apps, framework, row):
    response = get(apps, framework, row)
    assert response.status_code == 200
    if row.header:
        assert response.headers.get(row.header)
