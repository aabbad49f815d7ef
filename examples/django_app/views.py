"""Function views, a class-based view and an async view, each limited by Flux."""

from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View

from flux import rate_limit


@rate_limit(requests=20, period=60)
def index(request):
    return JsonResponse({"ok": True})


class ItemView(View):
    @method_decorator(rate_limit(requests=10, period=60))
    def get(self, request):
        return JsonResponse({"items": []})

    @method_decorator(rate_limit(requests=2, period=60, policy="fixed_window"))
    def post(self, request):
        return HttpResponse(status=201)


@rate_limit(requests=2, period=1, policy="leaky_bucket", max_wait=2)
async def slow(request):
    # Over 2 per second, calls are delayed (up to 2 s) rather than refused.
    return JsonResponse({"ok": True})
