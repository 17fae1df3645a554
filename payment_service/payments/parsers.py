"""A JSON parser that answers 400 to absurdly nested documents.

DRF's ``JSONParser`` turns ``ValueError`` into a 400 but lets the
``RecursionError`` raised by ``[[[[...`` (tens of thousands deep) escape as a
500. The chassis sets no parser classes, so the service installs this one.
"""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
