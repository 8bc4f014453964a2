"""Exceptions raised by diskcache_client."""

import json


class CacheServerError(Exception):
    """An error answered by a cacheserver, or failing to reach one.

    ``status`` is the HTTP status (0 when no answer came), ``code`` the
    server's error code (``not_found``, ``bad_key``, ``timeout``, ...) and
    ``message`` its explanation. An operation that reached several shards
    and failed on some says what the others did: a bulk removal (clear,
    evict, expire, cull) sets ``removed`` to the count they removed, and
    ``set_many`` sets ``failed`` to the indexes of the items not stored.
    """

    def __init__(self, message, status=0, code='', url=''):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.url = url

    def __str__(self):
        parts = []
        if self.url:
            # A URL holds the key, which may be long: its start is enough.
            url = self.url
            if len(url) > 300:
                url = '%s... (%d characters)' % (url[:240], len(url))
            parts.append(url)
        if self.status:
            parts.append('%d %s' % (self.status, self.code))
        parts.append(self.message)
        return ': '.join(parts)


class ServerUnavailable(CacheServerError, ConnectionError):
    """The server could not be reached (refused, reset, timed out), answered
    that it is unavailable, or is within the circuit breaker's cool-down
    after such a failure."""


class Timeout(CacheServerError):
    """The server's database stayed busy (HTTP 503, code ``timeout``): the
    counterpart of python-diskcache's ``diskcache.Timeout``. For the bulk
    removals (evict, expire, cull, clear) ``removed`` counts the items removed
    before the database gave up."""

    def __init__(self, message, status=503, code='timeout', url='', removed=0):
        super().__init__(message, status, code, url)
        self.removed = removed


class Unauthorized(CacheServerError):
    """The bearer token is missing or wrong (HTTP 401)."""


# The error code of an error answer, also in the body: the answer to a
# HEAD has none.
HEADER_ERROR = 'Diskcache-Error'


def error_of(resp):
    """The exception for an error answer (an http11 Response)."""
    return error_from_response(resp.status, resp.body, resp.url,
                               resp.header(HEADER_ERROR, ''))


def error_from_response(status, body, url='', header_code=''):
    """Build the exception for an error answer; ``header_code`` is its
    ``Diskcache-Error`` header, for an answer without a body."""
    code, message = '', ''
    try:
        doc = json.loads(body) if body else {}
        if isinstance(doc, dict):
            code = str(doc.get('error', ''))
            message = str(doc.get('message', ''))
    except (ValueError, UnicodeDecodeError):
        doc = {}
    if not code:
        message = (body or b'').decode('utf-8', 'replace').strip()[:500] or 'HTTP %d' % status
        code = header_code
    if status == 503 and code == 'timeout':
        removed = doc.get('removed', 0) if isinstance(doc, dict) else 0
        return Timeout(message, status, code, url, removed=removed)
    if status == 503:
        return ServerUnavailable(message, status, code or 'unavailable', url)
    if status == 401:
        return Unauthorized(message, status, code or 'unauthorized', url)
    return CacheServerError(message, status, code, url)
