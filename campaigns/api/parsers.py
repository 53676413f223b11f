"""The JSON parser of the cache API."""

from __future__ import annotations

from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class JSONBodyParser(JSONParser):
    """DRF's JSON parser, also rejecting a body nested deeper than Python's json module can decode.

    ``json.loads`` raises ``RecursionError`` for arrays or objects nested
    about a thousand levels deep; DRF's parser catches only ``ValueError``,
    so without this the request ends in a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(_("JSON parse error - the body is nested too deeply.")) from None
