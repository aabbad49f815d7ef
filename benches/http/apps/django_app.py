"""The Django app of the HTTP benchmark (served by gunicorn: 2 sync workers).

One module is the whole project: settings, views and URLs. No middleware
but Flux's in its own variant, so the limiters are compared with the least
a Django request costs.
django-ratelimit keeps its counts in the cache ``RATELIMIT_USE_CACHE``
names, one per process, so its Redis row is a variant of its own.
"""

from __future__ import annotations

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django_ratelimit.decorators import ratelimit
from limits import parse, storage, strategies

from common import BODY, FLOOR_HEADER, PERIOD, RATE_LIMIT_HEADERS_RAW, RATE_TEXT, REQUESTS, flux_config, redis_url
from common import only, redis_round_trip, route, unknown_variant, variant
from flux import RateLimiter, rate_limit

def flux_middleware(store: str) -> dict:
    """Flux's app-wide middleware, at the benchmark's limit."""
    return {
        "MIDDLEWARE": ["flux.django.RateLimitMiddleware"],
        "FLUX": {"rate": RATE_TEXT, "config": flux_config(store)},
    }


#: The settings each variant adds to the base ones.
VARIANTS = {
    "base": dict,
    "django-ratelimit-redis": lambda: {"RATELIMIT_USE_CACHE": "redis"},
    "flux-middleware-memory": lambda: flux_middleware("memory"),
    "flux-middleware-redis": lambda: flux_middleware("redis"),
}


def base_settings() -> dict:
    return {
        "DEBUG": False,
        "SECRET_KEY": "flux-http-benchmark",
        "ALLOWED_HOSTS": ["*"],
        "ROOT_URLCONF": __name__,
        "MIDDLEWARE": [],
        "INSTALLED_APPS": [],
        "DATABASES": {},
        "USE_TZ": True,
        "CACHES": {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url()},
        },
    }


def variant_settings(name: str) -> dict:
    if name not in VARIANTS:
        raise unknown_variant(name, VARIANTS)
    return VARIANTS[name]()


def plain(request):
    return JsonResponse(BODY)


def floor(request):
    response = JsonResponse(BODY)
    response[FLOOR_HEADER] = request.META["REMOTE_ADDR"]
    return response


#: Flux's five headers as Django keeps a response's headers (by lowercase
#: name), where Flux writes them.
FIVE_HEADERS = {name.decode(): (name.decode(), value.decode()) for name, value in RATE_LIMIT_HEADERS_RAW}


def floor_headers(request):
    response = floor(request)
    response.headers._store.update(FIVE_HEADERS)
    return response


def floor_round_trip(request):
    redis_round_trip()
    return floor(request)


@rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("memory"))
def flux_memory(request):
    return JsonResponse(BODY)


@rate_limit(requests=REQUESTS, period=PERIOD, config=flux_config("redis"))
def flux_redis(request):
    return JsonResponse(BODY)


def flux_inline_view(store: str):
    """Flux's limiter called inline, as `limits` is below: the floor plus one decision."""
    limiter = RateLimiter(REQUESTS, PERIOD, config=flux_config(store))

    def flux_inline(request):
        address = request.META["REMOTE_ADDR"]
        if not limiter.hit(address).allowed:
            return HttpResponse(status=429)
        response = JsonResponse(BODY)
        response[FLOOR_HEADER] = address
        return response

    return flux_inline


def limits_view(backend):
    """`limits` called inline, as a hand-written limiter would: the floor plus one decision."""
    limiter = strategies.FixedWindowRateLimiter(backend)
    item = parse(RATE_TEXT)

    def limits_inline(request):
        address = request.META["REMOTE_ADDR"]
        if not limiter.hit(item, address):
            return HttpResponse(status=429)
        response = JsonResponse(BODY)
        response[FLOOR_HEADER] = address
        return response

    return limits_inline


@ratelimit(key="ip", rate=RATE_TEXT, block=True)
def django_ratelimited(request):
    return JsonResponse(BODY)


ROUTES = [
    path("plain", plain),
    path("floor", floor),
    path("floor-headers", floor_headers),
    path("floor-round-trip", floor_round_trip),
    path("flux-inline/memory", flux_inline_view("memory")),
    path("flux-inline/redis", flux_inline_view("redis")),
    path("flux/memory", flux_memory),
    path("flux/redis", flux_redis),
    path("limits/memory", limits_view(storage.MemoryStorage())),
    path("limits/redis", limits_view(storage.RedisStorage(redis_url()))),
    path("django-ratelimit", django_ratelimited),
]


def urls_for(route_path: str | None) -> list:
    """The URL patterns a server keeps: all, or those of ``route_path`` alone."""
    return ROUTES if route_path is None else only(ROUTES, route_path, lambda p: f"/{p.pattern}")


urlpatterns = urls_for(route())

if not settings.configured:
    settings.configure(**{**base_settings(), **variant_settings(variant())})
    django.setup()

application = WSGIHandler()
