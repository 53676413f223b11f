"""Request checks that apply to every view."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound


class RejectNulBytesMiddleware:
    """Return 404 for a path containing a NUL byte.

    No id or key of this service contains one, and PostgreSQL rejects NUL in
    text parameters with an error that views would turn into a 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            if request.path.startswith("/api/"):
                from campaigns.api.errors import json_not_found

                return json_not_found(request)
            return HttpResponseNotFound()
        return self.get_response(request)
