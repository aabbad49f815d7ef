"""A FastAPI app limited by Flux.

    uvicorn fastapi_app:app --app-dir examples        # or: python examples/fastapi_app.py

Without a flux.toml it runs on the in-process memory store; with
FLUX_REDIS_URL (or [redis] in flux.toml) the limits are shared through Redis.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

import flux
from flux import get_config, rate_limit
from flux.asgi import RateLimitMiddleware

app = FastAPI(title="Flux example")
# Every request, whatever its route: 600 a minute per client. Views with a
# limit of their own have two limits (a refusal by the view's gives the
# app-wide charge back).
app.add_middleware(RateLimitMiddleware, rate="600/minute")


@app.get("/")
@rate_limit(requests=5, period=10)
async def root():
    # No `request` parameter: Flux still limits per client address.
    return {"message": "Hello World"}


@app.get("/search")
@rate_limit(requests=20, period=60, policy="sliding_window")
def search(q: str = ""):
    return {"results": [], "q": q}


@app.post("/login")
# Only failed logins count: 3 a minute.
@rate_limit(rate="3/minute", deduct_when=lambda response: getattr(response, "status_code", 200) >= 400)
async def login(request: Request):
    return {"welcome": request.client.host if request.client else None}


@app.get("/health")
@flux.exempt
def health():
    # Not limited: reports which store the limits live in.
    return {"ok": True, "storage": "redis" if get_config().uses_redis else "memory"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
