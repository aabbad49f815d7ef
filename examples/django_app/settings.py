"""Just enough settings for the example: no database, no templates."""

SECRET_KEY = "flux-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = ["flux.django.RateLimitMiddleware"]
# Every request: 600 a minute per client (flux.toml's [http] could say it instead).
FLUX = {"rate": "600/minute"}
DATABASES: dict = {}
USE_TZ = True
