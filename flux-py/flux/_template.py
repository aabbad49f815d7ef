"""The flux.toml that ``python -m flux.cli init`` writes: every option, each explained.

It must load as it is (a test loads it through the Rust schema).
"""

TEMPLATE = """\
# flux.toml: configuration of the Flux rate limiter.
# Found at $FLUX_CONFIG, else ./flux.toml, else ./config/flux.toml.
# Every key is optional; an unknown key or a bad value is an error at load time.

# -----------------------------------------------------------------------------
# Redis: where limits are shared between processes and machines.
# -----------------------------------------------------------------------------
[redis]
# A URL replaces host, port, db, username and password (leave those out then):
# redis://user:password@host:6379/0, rediss:// for TLS, redis+cluster:// for a cluster,
# redis+sentinel://[:password@]host1:26379,host2:26379/mymaster[/db] for Redis Sentinel.
# FLUX_REDIS_URL in the environment overrides the address.
# url = "redis://127.0.0.1:6379/0"
host = "127.0.0.1"          # Redis server host name or address
port = 6379                 # Redis server port
db = 0                      # database number (must be 0 with Redis Cluster)
# username = "flux"         # ACL user name (Redis 6+)
# password = "secret"       # password (with or without username)
pool_size = 5               # connections kept open per process
timeout_ms = 200            # upper bound on every Redis call, connecting included
cluster = false             # speak the Redis Cluster protocol
# Redis Sentinel, instead of host and port (db, username and password are the master's):
# sentinel = ["10.0.0.1:26379", "10.0.0.2:26379"]  # sentinels asked where the master is
# master_name = "mymaster"  # the name they monitor the master under
# sentinel_password = "secret"  # the sentinels' own password, when they ask for one
# sentinel_username = "flux"    # and the sentinels' ACL user it is of (Redis 6.2+)

# -----------------------------------------------------------------------------
# Flux: how the limiter behaves around its store.
# -----------------------------------------------------------------------------
[flux]
# "memory": limits per process, nothing to run. "redis": shared through [redis].
storage = "memory"
key_prefix = "flux:"        # prepended to every key Flux writes in Redis
# log_file = "flux.log"     # also log Flux's warnings to this file
fail_silently = true        # Redis down: true admits calls (fail open), false raises
console_logging = false     # log Flux's messages to stderr
jitter_enabled = true       # spread Retry-After so refused clients do not return at once
jitter_max_ms = 500         # the most jitter added, in milliseconds
ipv6_prefix = 64            # an IPv6 client is its /64 by default (1 to 128; 128: the full address)
local_cache_size = 10000    # refusals answered in-process until their Retry-After passes (Redis only; 0: off)

# -----------------------------------------------------------------------------
# Analytics: counters per endpoint, a Redis stream and a /metrics server.
# -----------------------------------------------------------------------------
[analytics]
enabled = false             # serve /metrics and send events to the stream
host = "127.0.0.1"          # address the metrics server listens on
port = 4444                 # port of the metrics server (/metrics, /metrics.json)
stream = "flux:events"      # Redis stream that batched events are added to
retention = 100000          # approximate maximum length of the stream, in events
sample_rate = 1.0           # share of events sent to the stream, 0.0 to 1.0

# -----------------------------------------------------------------------------
# The default limit: used by @rate_limit() without numbers or a name.
# -----------------------------------------------------------------------------
[rate_limit]
# "gcra" (smooth, one value per key), "token_bucket", "leaky_bucket" (can delay
# calls instead of refusing them), "fixed_window", "sliding_window".
policy = "gcra"
requests = 100              # calls admitted per period
period = 60                 # seconds (fractions allowed)
# rate = "100/minute"       # instead of requests and period; several: "10/second;1000/day"
# burst = 100               # calls admitted at once (bucket policies); default: requests
max_wait = 0                # leaky_bucket only: seconds a call may be delayed instead of refused
shadow = false              # true: admit every call, only count those it would have refused

# -----------------------------------------------------------------------------
# Named limits: @rate_limit(name="api") or RateLimiter.from_config("api").
# Each inherits what it leaves out from [rate_limit].
# -----------------------------------------------------------------------------
[rate_limits.api]
requests = 1000
period = 3600

[rate_limits.login]
policy = "token_bucket"
requests = 5
period = 300

# -----------------------------------------------------------------------------
# App-wide limits of the framework middlewares (flux.asgi.RateLimitMiddleware,
# flux.flask.Flux, flux.django.RateLimitMiddleware), when not given in code.
# -----------------------------------------------------------------------------
[http]
# rate = "1000/hour"        # the limit of every request no rule matches (or name = "api")

[http.rules]
# A path ("/login") or a prefix ending in * ("/api/*"); the exact path wins, then
# the longest prefix. The value: a rate, a limit's name, or false (not limited).
# "/login" = "5/minute"
# "/api/*" = "api"
# "/health" = false
"""
