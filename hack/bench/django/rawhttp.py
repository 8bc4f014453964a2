"""A minimal Django cache backend for cacheserver, for the benchmark only.

Not a product: ``get``, ``set``, ``delete`` and ``clear`` over one blocking
keep-alive socket per process, with each request written by hand and sent in
one ``sendall``, and answers read by ``Content-Length``: no ``http.client``,
no retries, no circuit breaker, no shards. It speaks the same wire protocol
as ``diskcache_client.djangocache.DjangoCache`` (same paths, value types,
expiry parameter, bearer token), so next to it in ``bench.py`` it shows how
much of that backend's time is the Python HTTP client and how much is the
server and the network (the ``cacheserver-floor`` backend).
"""

import os
import pickle
import socket
from urllib.parse import quote, urlsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache


def _segment(key):
    return quote(key.encode('utf-8'), safe='').replace('.', '%2E')


class RawHTTPCache(BaseCache):
    def __init__(self, location, params):
        super().__init__(params)
        parts = urlsplit(location)
        self._addr = (parts.hostname, parts.port or 80)
        options = params.get('OPTIONS', {})
        token = options.get('TOKEN')
        if token is None and options.get('TOKEN_FILE'):
            with open(options['TOKEN_FILE'], encoding='utf-8') as f:
                token = f.read().strip()
        self._common = ('Host: %s\r\nAuthorization: Bearer %s\r\n'
                        % (parts.netloc, token)).encode('latin-1')
        self._sock = None
        self._buf = b''
        self._pid = None

    def _connect(self):
        if self._sock is None or self._pid != os.getpid():
            self._sock = socket.create_connection(self._addr)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buf = b''
            self._pid = os.getpid()
        return self._sock

    def _request(self, head, body=b''):
        """Send one request; return (status, headers {lower: value}, body)."""
        sock = self._connect()
        sock.sendall(head + self._common + b'\r\n' + body if not body else
                     head + self._common + b'Content-Length: %d\r\n\r\n' % len(body) + body)
        buf = self._buf
        while True:
            end = buf.find(b'\r\n\r\n')
            if end >= 0:
                break
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError('cacheserver closed the connection')
            buf += chunk
        lines = buf[:end].decode('latin-1').split('\r\n')
        status = int(lines[0].split(' ', 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(':')
            headers[name.lower()] = value.strip()
        length = int(headers.get('content-length', 0))
        start = end + 4
        while len(buf) < start + length:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError('cacheserver closed the connection')
            buf += chunk
        self._buf = buf[start + length:]
        return status, headers, buf[start:start + length]

    def _path(self, key, version):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        return '/v1/keys/' + _segment(key)

    def get(self, key, default=None, version=None):
        status, headers, body = self._request(
            ('GET %s HTTP/1.1\r\n' % self._path(key, version)).encode('latin-1'))
        if status == 404:
            return default
        if status != 200:
            raise RuntimeError('GET answered %d: %r' % (status, body[:200]))
        kind = headers.get('diskcache-value-type', 'bytes')
        if kind == 'bytes':
            return body
        if kind == 'pickle':
            return pickle.loads(body)
        if kind == 'text':
            return body.decode('utf-8')
        if kind == 'int':
            return int(body)
        return float(body)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        timeout = self.get_backend_timeout(timeout)
        if type(value) is bytes:  # pylint: disable=unidiomatic-typecheck
            kind, body = 'bytes', value
        else:
            kind, body = 'pickle', pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        query = '' if timeout is None else '?expire=%r' % max(float(timeout), -1.0)
        status, _, resp = self._request(
            ('PUT %s%s HTTP/1.1\r\nDiskcache-Value-Type: %s\r\n'
             % (self._path(key, version), query, kind)).encode('latin-1'), body)
        if status != 204:
            raise RuntimeError('PUT answered %d: %r' % (status, resp[:200]))
        return True

    def get_backend_timeout(self, timeout=DEFAULT_TIMEOUT):
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        elif timeout == 0:
            timeout = -1
        return timeout

    def delete(self, key, version=None):
        status, _, body = self._request(
            ('DELETE %s HTTP/1.1\r\n' % self._path(key, version)).encode('latin-1'))
        if status != 200:
            raise RuntimeError('DELETE answered %d: %r' % (status, body[:200]))
        return b'"deleted":true' in body

    def clear(self):
        # One shard per URL: the server's own fan-out clears every SQLite shard.
        status, _, body = self._request(b'POST /v1/clear HTTP/1.1\r\n', b'')
        if status != 200:
            raise RuntimeError('clear answered %d: %r' % (status, body[:200]))

    def close(self, **kwargs):
        """Keep the connection (Django calls close() after every request)."""
