"""python-diskcache's ``Deque`` and ``Index`` over HTTP.

:class:`Deque` is the server's deque ``name`` (``/v1/deques/<name>``,
directory ``deque/<name>``) and :class:`Index` its index ``name``
(``/v1/indexes/<name>``, directory ``index/<name>``): the collections that
python-diskcache's ``FanoutCache.deque(name)`` and ``FanoutCache.index(name)``
keep in the same directories, so a directory written by python-diskcache
reads back as the same sequence and mapping, in the same order.

The first half of this module holds the operations, written like
:mod:`diskcache_client.ops`: I/O-free generators that yield
:class:`~diskcache_client.transport.Request` objects, so that
:meth:`Client.run` and :meth:`Client.arun` both drive them. ``c`` is the
:class:`~diskcache_client.transport.Client`, ``path`` the escaped path of
the collection and ``shard`` the server (of a list of shard URLs) that keeps
it. The classes come after.

Every method that changes a collection is one request, atomic on the server,
except where its documentation says otherwise (``remove`` and ``insert``).
"""

import collections.abc
import functools
import json
import operator
import sys
from collections import OrderedDict

from . import wire
from .errors import error_of
from .http11 import Request
from .memo import ENOVAL, args_to_key, full_name
from .ops import key_target
from .transport import Client

__all__ = ['Deque', 'Index']

_VALUE_TYPE = wire.HEADER_VALUE_TYPE

# The deque index, maxlen and rotate steps the server takes are 32-bit.
INT32_MAX = 2 ** 31 - 1

# Listings: the first page asks for PAGE_FIRST items; later pages are sized
# so that a page holds about PAGE_BYTES, within [1, PAGE_MAX] items (the
# server allows up to 10000).
PAGE_FIRST = 64
PAGE_MAX = 1000
PAGE_BYTES = 4 << 20

# Deque extend: values per request and bytes per request (a request is cut
# after the value that reaches EXTEND_BYTES; the server takes up to 10000).
EXTEND_RECORDS = 1000
EXTEND_BYTES = 8 << 20

SIDES = ('back', 'front')


# -- helpers --------------------------------------------------------------------

def _request(method, path, shard, params=(), **kwargs):
    return Request(method, path, query=wire.build_query(params), shard=shard, **kwargs)


def _value_request(method, path, shard, value, params=(), idempotent=False):
    """A request whose body is ``value``; pickling errors propagate."""
    value_type, body = wire.encode_value(value)
    return _raw_value_request(method, path, shard, value_type, body, params, idempotent)


def _raw_value_request(method, path, shard, value_type, body, params=(), idempotent=False):
    return _request(method, path, shard, params, headers={_VALUE_TYPE: value_type},
                    body=body, idempotent=idempotent)


def _check(resp):
    if 200 <= resp.status < 300:
        return resp
    raise error_of(resp)


def _json(resp):
    _check(resp)
    return json.loads(resp.body) if resp.body else {}


def _absent(resp, *codes):
    """Whether an answer is a 404 with one of the error ``codes`` (for a
    bodiless HEAD answer: any 404). Any other error is raised, so that a 404
    for a route the server does not have is never taken for a miss."""
    if resp.status != 404:
        _check(resp)
        return False
    if not resp.body:
        return True
    err = error_of(resp)
    if err.code in codes and not err.message.startswith('no route'):
        return True
    raise err


def _value(resp):
    return wire.decode_value(resp.header(_VALUE_TYPE, 'bytes'), resp.body)


def _record_value(header, raw):
    return wire.decode_value(header.get('type') or 'bytes', raw)


def _side(side):
    if side not in SIDES:
        # python-diskcache looks the side up in a dict: KeyError.
        raise KeyError(side)
    return side


def collection_path(kind, name):
    """The escaped path of the deque or index ``name`` (kind ``deques`` or
    ``indexes``); ``/`` in the name is escaped, so names nest as
    directories."""
    return '/v1/%s/%s' % (kind, wire.path_segment(name.encode('utf-8')))


# -- deque operations -------------------------------------------------------------

def deque_len(c, path, shard):
    resp = yield _request('GET', path, shard, idempotent=True)
    return int(_json(resp).get('len', 0))


def deque_clear(c, path, shard):
    resp = yield _request('DELETE', path, shard, idempotent=True)
    return int(_json(resp).get('removed', 0))


def deque_push(c, path, shard, value, side='back', maxlen=None):
    """Append (side back) or appendleft (front); the server drops items
    from the other end, in the same transaction, down to ``maxlen``. The
    length after."""
    params = [('side', side)] + _maxlen_params(maxlen)
    resp = yield _value_request('POST', path + '/push', shard, value, params)
    return int(_json(resp).get('len', 0))


def deque_extend(c, path, shard, records, side='back', maxlen=None):
    """Extend (side back) or extendleft (front) with value records (see
    :func:`wire.value_record`), in one transaction with the trimming to
    ``maxlen``; no records only trims. The length after."""
    params = [('side', side)] + _maxlen_params(maxlen)
    resp = yield _request('POST', path + '/items', shard, params,
                          headers={'Content-Type': wire.RECORDS_CONTENT_TYPE},
                          body=b''.join(records))
    return int(_json(resp).get('len', 0))


def deque_take(c, path, shard, side='back', remove=True):
    """pop/popleft (``remove``) or peek/peekleft: the value, or ENOVAL when
    the deque is empty."""
    if remove:
        req = _request('POST', path + '/pop', shard, [('side', side)])
    else:
        req = _request('GET', path + '/peek', shard, [('side', side)], idempotent=True)
    resp = yield req
    if _absent(resp, 'empty'):
        return ENOVAL
    return _value(resp)


def deque_page(c, path, shard, reverse=False, offset=0, limit=PAGE_MAX):
    """Up to ``limit`` items from position ``offset`` on (from the back with
    ``reverse``): ``([(record_header, value_bytes)], body_size)``."""
    params = [('reverse', 'true' if reverse else 'false'), ('offset', str(offset)),
              ('limit', str(limit))]
    resp = yield _request('GET', path + '/items', shard, params, idempotent=True)
    _check(resp)
    return list(wire.iter_records(resp.body)), len(resp.body)


def deque_at(c, path, shard, index):
    """The value at ``index``, or ENOVAL when out of range."""
    resp = yield _request('GET', '%s/items/%d' % (path, index), shard, idempotent=True)
    if _absent(resp, 'index_out_of_range'):
        return ENOVAL
    return _value(resp)


def deque_set_at(c, path, shard, index, value):
    """Replace the value at ``index``; False when out of range."""
    resp = yield _value_request('PUT', '%s/items/%d' % (path, index), shard, value,
                                idempotent=True)
    return not _absent(resp, 'index_out_of_range')


def deque_delete_at(c, path, shard, index):
    """Delete the item at ``index``; False when out of range. Never
    retried: a second try would delete another item."""
    resp = yield _request('DELETE', '%s/items/%d' % (path, index), shard)
    return not _absent(resp, 'index_out_of_range')


def deque_rotate(c, path, shard, steps):
    resp = yield _request('POST', path + '/rotate', shard, [('steps', str(steps))])
    _check(resp)


def deque_reverse(c, path, shard):
    resp = yield _request('POST', path + '/reverse', shard)
    _check(resp)


def deque_remove_encoded(c, path, shard, value_type, body):
    """Remove the first item whose stored value equals ``(value_type,
    body)`` as the server compares (same type and bytes; ints and floats as
    numbers); whether there was one."""
    resp = yield _raw_value_request('POST', path + '/remove', shard, value_type, body)
    return bool(_json(resp).get('removed'))


def _maxlen_params(maxlen):
    if maxlen is None or maxlen == float('inf') or maxlen > INT32_MAX:
        return []
    return [('maxlen', str(int(maxlen)))]


# -- index operations ---------------------------------------------------------------

def _key_request(path, shard, key, method, suffix='', params=(), **kwargs):
    _, segment, query = key_target(key, params)
    return Request(method, path + '/keys/' + segment + suffix,
                   query=wire.build_query(query), shard=shard, **kwargs)


def index_len(c, path, shard):
    resp = yield _request('GET', path, shard, idempotent=True)
    return int(_json(resp).get('len', 0))


def index_clear(c, path, shard):
    resp = yield _request('DELETE', path, shard, idempotent=True)
    return int(_json(resp).get('removed', 0))


def index_get(c, path, shard, key):
    """The value of ``key``, or ENOVAL."""
    resp = yield _key_request(path, shard, key, 'GET', idempotent=True)
    if _absent(resp, 'not_found'):
        return ENOVAL
    return _value(resp)


def index_contains(c, path, shard, key):
    resp = yield _key_request(path, shard, key, 'HEAD', idempotent=True)
    return not _absent(resp, 'not_found')


def index_set(c, path, shard, key, value):
    value_type, body = wire.encode_value(value)
    resp = yield _key_request(path, shard, key, 'PUT', headers={_VALUE_TYPE: value_type},
                              body=body, idempotent=True)
    _check(resp)


def index_delete(c, path, shard, key):
    resp = yield _key_request(path, shard, key, 'DELETE', idempotent=True)
    return bool(_json(resp).get('deleted'))


def index_setdefault(c, path, shard, key, default):
    """Store ``default`` unless ``key`` has an item; the value stored."""
    value_type, body = wire.encode_value(default)
    resp = yield _key_request(path, shard, key, 'POST', '/setdefault',
                              headers={_VALUE_TYPE: value_type}, body=body, idempotent=True)
    _check(resp)
    return _value(resp)


def index_pop(c, path, shard, key):
    """Remove ``key`` and return its value, or ENOVAL."""
    resp = yield _key_request(path, shard, key, 'POST', '/pop')
    if _absent(resp, 'not_found'):
        return ENOVAL
    return _value(resp)


def _key_and_value(resp):
    return wire.key_from_headers(resp.headers), _value(resp)


def index_popitem(c, path, shard, last=True):
    """Remove the last (first) item in insertion order: ``(key, value)``, or
    ENOVAL when the index is empty."""
    resp = yield _request('POST', path + '/popitem', shard,
                          [('last', 'true' if last else 'false')])
    if _absent(resp, 'empty'):
        return ENOVAL
    return _key_and_value(resp)


def index_peekitem(c, path, shard, last=True):
    resp = yield _request('GET', path + '/peekitem', shard,
                          [('last', 'true' if last else 'false')], idempotent=True)
    if _absent(resp, 'empty'):
        return ENOVAL
    return _key_and_value(resp)


def _prefix_params(prefix, side):
    params = [('side', side)]
    if prefix is not None:
        params.insert(0, ('prefix', prefix))
    return params


def index_push(c, path, shard, value, prefix=None, side='back'):
    """python's ``Index.push``: the new key."""
    resp = yield _value_request('POST', path + '/push', shard, value,
                                _prefix_params(prefix, side))
    if resp.status == 409:
        err = error_of(resp)
        if err.code == 'not_numeric':
            # A key at the queue's end int() refuses, as python-diskcache says.
            raise ValueError(err.message)
    return wire.json_key(_json(resp))


def index_pull(c, path, shard, prefix=None, side='front'):
    """python's ``Index.pull``: ``(key, value)``, or ENOVAL."""
    resp = yield _request('POST', path + '/pull', shard, _prefix_params(prefix, side))
    if _absent(resp, 'empty'):
        return ENOVAL
    return _key_and_value(resp)


def index_page(c, path, shard, reverse=False, cursor=None, limit=PAGE_MAX, values=True):
    """One page of the listing in insertion order (reverse: the reverse):
    ``([(record_header, value_bytes)], next_cursor_or_None, body_size)``."""
    params = [('reverse', 'true' if reverse else 'false'), ('limit', str(limit)),
              ('values', 'true' if values else 'false')]
    if cursor:
        params.append(('cursor', cursor))
    resp = yield _request('GET', path + '/items', shard, params, idempotent=True)
    _check(resp)
    return (list(wire.iter_records(resp.body)), resp.header(wire.HEADER_NEXT_CURSOR) or None,
            len(resp.body))


# -- classes ------------------------------------------------------------------------

def _next_limit(limit, count, size):
    """The size of the next page: about PAGE_BYTES, within [1, PAGE_MAX]."""
    if count <= 0:
        return limit
    per_item = max(1, size // count)
    return max(1, min(PAGE_MAX, PAGE_BYTES // per_item))


class _Collection:
    """A named collection on the server: client, name, path and shard."""

    _kind = None  # 'deques' or 'indexes'

    def __init__(self, client, name, client_options=None):
        if isinstance(client, (str, list, tuple)):
            client = Client(client, **(client_options or {}))
        elif client_options:
            raise TypeError('client options go with a server URL, not with a Client')
        if not isinstance(name, str) or not name:
            raise ValueError('a %s name must be a non-empty str' % type(self).__name__.lower())
        self._client = client
        self._name = name
        self._path = collection_path(self._kind, name)
        # The whole collection lives on one shard: the owner of its name.
        self._routing = name.encode('utf-8')

    @property
    def client(self):
        """The :class:`~diskcache_client.transport.Client`."""
        return self._client

    @property
    def name(self):
        """The collection's name (its directory below ``deque/`` or
        ``index/`` on the server)."""
        return self._name

    @property
    def _shard(self):
        # Asked per call: a client that follows a topology may have learnt
        # a new one since.
        return self._client.shard_of(self._routing)

    def _run(self, op, *args, **kwargs):
        client = self._client
        client.follow()  # before routing by the topology
        return client.run(op(client, self._path, self._shard, *args, **kwargs))

    def _where(self):
        return self._client.where(self._shard)

    @staticmethod
    def transact():
        """Not available over HTTP: the server makes each call atomic, and
        has no transaction spanning several requests."""
        raise NotImplementedError(
            'transact() is not available over HTTP: every call is one atomic '
            'request on the server')


def _check_maxlen(maxlen):
    """``maxlen`` as python-diskcache keeps it: ``float('inf')`` when
    unbounded."""
    if maxlen is None or (isinstance(maxlen, float) and maxlen == float('inf')):
        return float('inf')
    if isinstance(maxlen, bool):
        raise TypeError('maxlen must be None or an int, not bool')
    try:
        maxlen = operator.index(maxlen)
    except TypeError:
        raise TypeError('maxlen must be None or an int, not %s'
                        % type(maxlen).__name__) from None
    if maxlen < 0:
        raise ValueError('maxlen must be non-negative')
    return maxlen


def _sequence_compare(seq_op, doc):
    """A comparison of a Deque with any Sequence, with python-diskcache's
    semantics: lengths first for == and !=, then the first differing pair of
    items, else the lengths."""

    def compare(self, that):
        if not isinstance(that, collections.abc.Sequence):
            return NotImplemented
        size, that_size = len(self), len(that)
        if size != that_size and seq_op in (operator.eq, operator.ne):
            return seq_op is operator.ne
        for mine, theirs in zip(self, that):
            if mine != theirs:
                return seq_op(mine, theirs)
        return seq_op(size, that_size)

    compare.__name__ = '__%s__' % seq_op.__name__
    compare.__doc__ = 'True if and only if the deque is %s ``that``.' % doc
    return compare


class Deque(_Collection, collections.abc.MutableSequence):
    """python-diskcache's ``Deque`` kept by a cacheserver.

    ``Deque(client, name, iterable=(), maxlen=None)`` is the server's deque
    ``name`` (directory ``deque/<name>``; ``/`` in the name nests
    directories), extended with ``iterable``. ``client`` is a
    :class:`~diskcache_client.transport.Client` or a server URL (then
    keyword arguments are its options). Usually obtained with
    ``cache.deque(name)``.

    ``maxlen`` bounds the deque as python-diskcache's does: the server does
    not store it, so each object passes it along with every append and
    extend, and the items beyond it are dropped from the other end in the
    same transaction. Two objects of one deque with different maxlens
    behave as two python-diskcache ``Deque`` objects on one directory do,
    except that an append to a deque already longer than maxlen (another
    object made it so) trims it down to maxlen at once, where
    python-diskcache drops one item per append.
    """

    _kind = 'deques'

    def __init__(self, client, name, iterable=(), maxlen=None, **client_options):
        super().__init__(client, name, client_options)
        self._maxlen = _check_maxlen(maxlen)
        self._extend(iterable, 'back')

    def __reduce__(self):
        # python-diskcache pickles a Deque as its directory and maxlen; this
        # one as its client's configuration, name and maxlen. Unpickling
        # sends nothing to the server.
        maxlen = None if self._maxlen == float('inf') else self._maxlen
        return type(self), (self._client, self._name, (), maxlen)

    def __repr__(self):
        bound = '' if self._maxlen == float('inf') else ', maxlen=%d' % self._maxlen
        return '%s(%r, %r%s)' % (type(self).__name__, self._where(), self._name, bound)

    @property
    def maxlen(self):
        """The maximum length, ``float('inf')`` when unbounded (as
        python-diskcache's). Setting it drops items from the front until
        the deque fits, atomically."""
        return self._maxlen

    @maxlen.setter
    def maxlen(self, value):
        self._maxlen = _check_maxlen(value)
        if self._maxlen != float('inf'):
            self._run(deque_extend, [], 'back', self._maxlen)

    def copy(self):
        """Another object for the same server deque, with the same maxlen
        (python-diskcache's ``copy`` shares the directory too)."""
        return type(self)(self._client, self._name, maxlen=self._maxlen)

    # -- ends ---------------------------------------------------------------------

    def append(self, value):
        """Add ``value`` at the back (dropping the front item when that
        exceeds maxlen)."""
        self._run(deque_push, value, 'back', self._maxlen)

    def appendleft(self, value):
        """Add ``value`` at the front (dropping the back item when that
        exceeds maxlen)."""
        self._run(deque_push, value, 'front', self._maxlen)

    def extend(self, iterable):
        """Append the values of ``iterable`` at the back, in order."""
        self._extend(iterable, 'back')

    def extendleft(self, iterable):
        """Add the values of ``iterable`` at the front one by one (so they
        end up in reverse order)."""
        self._extend(iterable, 'front')

    def __iadd__(self, iterable):
        self._extend(iterable, 'back')
        return self

    def _extend(self, iterable, side):
        # Values go in requests of up to EXTEND_RECORDS values, each atomic
        # with its trimming to maxlen. As python-diskcache appends one value
        # at a time, the values before one that fails to pickle (or before
        # an iterable that raises) are added.
        if iterable is self or (isinstance(iterable, Deque) and
                                (iterable._where(), iterable._path) == (self._where(), self._path)):
            # Read it through first: a deque extended with itself would
            # otherwise go on finding what it just appended.
            iterable = list(iterable)
        batch, size = [], 0
        try:
            for value in iterable:
                rec = wire.value_record(value)
                batch.append(rec)
                size += len(rec)
                if len(batch) >= EXTEND_RECORDS or size >= EXTEND_BYTES:
                    records, batch, size = batch, [], 0
                    self._run(deque_extend, records, side, self._maxlen)
        except Exception:
            if batch:
                self._run(deque_extend, batch, side, self._maxlen)
            raise
        if batch:
            self._run(deque_extend, batch, side, self._maxlen)

    def pop(self):  # pylint: disable=arguments-differ
        """Remove and return the back value; IndexError when empty."""
        value = self._run(deque_take, 'back', True)
        if value is ENOVAL:
            raise IndexError('pop from an empty deque')
        return value

    def popleft(self):
        """Remove and return the front value; IndexError when empty."""
        value = self._run(deque_take, 'front', True)
        if value is ENOVAL:
            raise IndexError('pop from an empty deque')
        return value

    def peek(self):
        """The back value; IndexError when empty."""
        value = self._run(deque_take, 'back', False)
        if value is ENOVAL:
            raise IndexError('peek from an empty deque')
        return value

    def peekleft(self):
        """The front value; IndexError when empty."""
        value = self._run(deque_take, 'front', False)
        if value is ENOVAL:
            raise IndexError('peek from an empty deque')
        return value

    # -- positions ------------------------------------------------------------------

    @staticmethod
    def _position(index):
        """``index`` as an int the server takes; None if it is certainly out
        of range."""
        index = operator.index(index)
        return index if -INT32_MAX - 1 <= index <= INT32_MAX else None

    def __getitem__(self, index):
        """The value at ``index`` (negative counts from the back);
        IndexError outside the deque. One request."""
        position = self._position(index)
        value = ENOVAL if position is None else self._run(deque_at, position)
        if value is ENOVAL:
            raise IndexError('deque index out of range')
        return value

    def __setitem__(self, index, value):
        """Replace the value at ``index``; IndexError outside the deque."""
        position = self._position(index)
        if position is None or not self._run(deque_set_at, position, value):
            raise IndexError('deque index out of range')

    def __delitem__(self, index):
        """Delete the item at ``index``; IndexError outside the deque."""
        position = self._position(index)
        if position is None or not self._run(deque_delete_at, position):
            raise IndexError('deque index out of range')

    def insert(self, index, value):
        """Insert ``value`` before ``index`` (as ``list.insert``);
        IndexError when the deque is at its maxlen (as
        ``collections.deque``). At either end this is one append; in the
        middle it is three requests (rotate, appendleft, rotate back) and
        not atomic: python-diskcache's Deque has no insert."""
        index = operator.index(index)
        size = len(self)
        if size >= self._maxlen:
            raise IndexError('deque already at its maximum size')
        if index < 0:
            index = max(0, index + size)
        if index == 0:
            self.appendleft(value)
        elif index >= size:
            self.append(value)
        else:
            self.rotate(-index)
            self.appendleft(value)
            self.rotate(index)

    def __len__(self):
        return self._run(deque_len)

    # -- iteration --------------------------------------------------------------------

    def _records(self, reverse=False):
        """Yield ``(record_header, value_bytes)`` front to back (back to
        front with ``reverse``), a page per request.

        Deque items are ordered by their integer keys, so, as
        python-diskcache's iteration goes key by key, so does this one:
        each page after the first also reads the item before the position
        expected to come next, and items at or before the last key yielded
        are skipped. Should a page start past that key (items before it
        were removed meanwhile, shifting positions), the page is read again
        from further back, so no item is missed.
        """
        limit = PAGE_FIRST
        last = None  # key of the last item yielded
        by_key = True  # False once a key is not an int: plain offsets then
        pos = 0  # position after the last item read
        back = 0  # extra distance to step back after a shift

        def beyond(key):
            return key < last if reverse else key > last

        while True:
            overlap = 1 if (by_key and last is not None) else 0
            start = max(0, pos - overlap - back)
            asked = limit + overlap
            records, size = self._run(deque_page, reverse, start, asked)
            fresh = records
            if overlap:
                keys = [wire.record_key(header) for header, _ in records]
                if all(type(k) is int for k in keys):  # pylint: disable=unidiomatic-typecheck
                    fresh = [rec for rec, k in zip(records, keys) if beyond(k)]
                    if start > 0 and len(fresh) == len(records):
                        back = max(limit, 2 * back)
                        continue
                else:
                    by_key = False
            back = 0
            for header, raw in fresh:
                yield header, raw
                if by_key:
                    key = wire.record_key(header)
                    if type(key) is int:  # pylint: disable=unidiomatic-typecheck
                        last = key
                    else:
                        by_key = False
            if len(records) < asked:
                return
            pos = start + len(records)
            limit = _next_limit(limit, len(records), size)

    def __iter__(self):
        """Values front to back, read a page at a time."""
        for header, raw in self._records():
            yield _record_value(header, raw)

    def __reversed__(self):
        """Values back to front, read a page at a time."""
        for header, raw in self._records(reverse=True):
            yield _record_value(header, raw)

    __eq__ = _sequence_compare(operator.eq, 'equal to')
    __ne__ = _sequence_compare(operator.ne, 'not equal to')
    __lt__ = _sequence_compare(operator.lt, 'less than')
    __gt__ = _sequence_compare(operator.gt, 'greater than')
    __le__ = _sequence_compare(operator.le, 'less than or equal to')
    __ge__ = _sequence_compare(operator.ge, 'greater than or equal to')

    __hash__ = None

    # -- searching ------------------------------------------------------------------

    def count(self, value):
        """The number of items equal to ``value`` with Python's ``==``, as
        python-diskcache counts: the deque is read through."""
        return sum(1 for item in self if value == item)

    def index(self, value, start=0, stop=None):
        """The position of the first item equal to ``value`` within
        ``[start, stop)``; ValueError if there is none."""
        if start is None:
            start = 0
        if start < 0 or (stop is not None and stop < 0):
            size = len(self)
            if start < 0:
                start = max(0, start + size)
            if stop is not None and stop < 0:
                stop += size
        for position, item in enumerate(self):
            if stop is not None and position >= stop:
                break
            if position >= start and (item is value or item == value):
                return position
        raise ValueError('%r is not in deque' % (value,))

    def remove(self, value):
        """Remove the first item equal to ``value`` (Python's ``==``, as
        python-diskcache); ValueError if there is none.

        The deque is read up to that item; the item is then removed by the
        server in one atomic step that matches its stored bytes, so an item
        removed meanwhile by someone else is never taken for it (the search
        goes on instead, as python-diskcache's does).
        """
        for header, raw in self._records():
            if value == _record_value(header, raw):
                value_type = header.get('type') or 'bytes'
                if self._run(deque_remove_encoded, value_type, raw):
                    return
        raise ValueError('deque.remove(value): value not in deque')

    # -- whole deque ------------------------------------------------------------------

    def clear(self):
        """Remove every item. The server removes the deque's files too: a
        deque cleared takes no space there until it is used again."""
        self._run(deque_clear)

    def reverse(self):
        """Reverse the deque in place, atomically."""
        self._run(deque_reverse)

    def rotate(self, steps=1):
        """Rotate right by ``steps`` (left when negative), atomically."""
        if not isinstance(steps, int):  # a bool is an int, as for python-diskcache
            raise TypeError('integer argument expected, got %s' % type(steps).__name__)
        steps = int(steps)
        if not -INT32_MAX - 1 <= steps <= INT32_MAX:
            size = len(self)
            if not size:
                return
            steps %= size
        self._run(deque_rotate, steps)


class _ValuesView(collections.abc.ValuesView):
    """Values in insertion order, read a page at a time."""

    def __iter__(self):
        for header, raw in self._mapping._records(values=True):  # pylint: disable=protected-access
            yield _record_value(header, raw)

    def __reversed__(self):
        for header, raw in self._mapping._records(reverse=True, values=True):  # pylint: disable=protected-access
            yield _record_value(header, raw)


class _ItemsView(collections.abc.ItemsView):
    """``(key, value)`` pairs in insertion order, read a page at a time."""

    def __iter__(self):
        for header, raw in self._mapping._records(values=True):  # pylint: disable=protected-access
            yield wire.record_key(header), _record_value(header, raw)

    def __reversed__(self):
        for header, raw in self._mapping._records(reverse=True, values=True):  # pylint: disable=protected-access
            yield wire.record_key(header), _record_value(header, raw)


def _ordered_types():
    """Mappings whose comparison with an Index is order-sensitive:
    Index, OrderedDict and, when loaded, python-diskcache's Index."""
    types = (Index, OrderedDict)
    diskcache = sys.modules.get('diskcache')
    other = getattr(diskcache, 'Index', None)
    if isinstance(other, type):
        types += (other,)
    return types


class Index(_Collection, collections.abc.MutableMapping):
    """python-diskcache's ``Index`` kept by a cacheserver: a mapping that
    remembers insertion order.

    ``Index(client, name, *args, **kwargs)`` is the server's index ``name``
    (directory ``index/<name>``; ``/`` in the name nests directories),
    updated with ``args``/``kwargs`` as ``dict()`` takes them. ``client``
    is a :class:`~diskcache_client.transport.Client` or a server URL.
    Usually obtained with ``cache.index(name)``.

    Keys are python-diskcache's: ``str``, ``bytes``, ``int`` (64-bit) and
    ``float`` as themselves, anything else pickled; they are looked up by
    their serialized form, not by hashing (so ``1`` and ``1.0`` are two
    keys).
    """

    _kind = 'indexes'

    def __init__(self, client, name, *args, **kwargs):
        super().__init__(client, name)
        self.update(*args, **kwargs)

    def __reduce__(self):
        # python-diskcache pickles an Index as its directory; this one as its
        # client's configuration and name.
        return type(self), (self._client, self._name)

    def __repr__(self):
        return '%s(%r, %r)' % (type(self).__name__, self._where(), self._name)

    # -- single keys ----------------------------------------------------------------

    def __getitem__(self, key):
        value = self._run(index_get, key)
        if value is ENOVAL:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        """Store ``value``: a new key goes last in insertion order, an
        existing one keeps its place."""
        self._run(index_set, key, value)

    def __delitem__(self, key):
        if not self._run(index_delete, key):
            raise KeyError(key)

    def __contains__(self, key):
        return self._run(index_contains, key)

    def setdefault(self, key, default=None):
        """The value of ``key``, storing ``default`` first if it has none
        (atomic on the server)."""
        return self._run(index_setdefault, key, default)

    def pop(self, key, default=ENOVAL):  # pylint: disable=arguments-differ
        """Remove ``key`` and return its value (atomic); ``default`` if it
        is missing, KeyError when no default is given."""
        value = self._run(index_pop, key)
        if value is ENOVAL:
            if default is ENOVAL:
                raise KeyError(key)
            return default
        return value

    def update(self, *args, **kwargs):  # pylint: disable=arguments-differ
        """``dict.update``: from a mapping, an object with ``keys()``, or
        ``(key, value)`` pairs, then ``kwargs``; one request per item."""
        if len(args) > 1:
            raise TypeError('update expected at most 1 positional argument, got %d'
                            % len(args))
        if args:
            other = args[0]
            if isinstance(other, Index):
                pairs = other.items()
            elif isinstance(other, collections.abc.Mapping) or hasattr(other, 'keys'):
                pairs = ((key, other[key]) for key in other.keys())
            else:
                pairs = other
            for key, value in pairs:
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    # -- ends -------------------------------------------------------------------------

    def popitem(self, last=True):
        """Remove and return the last ``(key, value)`` in insertion order
        (LIFO), or the first (FIFO) with ``last=False``, atomically;
        KeyError when empty."""
        item = self._run(index_popitem, bool(last))
        if item is ENOVAL:
            raise KeyError('dictionary is empty')
        return item

    def peekitem(self, last=True):
        """The last ``(key, value)`` in insertion order (the first with
        ``last=False``); KeyError when empty."""
        item = self._run(index_peekitem, bool(last))
        if item is ENOVAL:
            raise KeyError('dictionary is empty')
        return item

    def push(self, value, prefix=None, side='back'):
        """Push ``value`` on the ``side`` of the queue ``prefix`` and return
        its key: ints from 500000000000000 without a prefix, else
        ``'<prefix>-%015d'`` strs (python-diskcache's keys)."""
        return self._run(index_push, value, _prefix(prefix), _side(side))

    def pull(self, prefix=None, default=(None, None), side='front'):
        """Remove and return the ``(key, value)`` at the ``side`` of the
        queue ``prefix``; ``default`` when the queue is empty."""
        item = self._run(index_pull, _prefix(prefix), _side(side))
        return default if item is ENOVAL else item

    # -- whole index ------------------------------------------------------------------

    def __len__(self):
        return self._run(index_len)

    def clear(self):
        """Remove every item. The server removes the index's files too: an
        index cleared takes no space there until it is used again."""
        self._run(index_clear)

    def _records(self, reverse=False, values=False):
        """Yield ``(record_header, value_bytes)`` in insertion order (or
        reversed), a page per request; the server's cursors are positions
        in insertion order, so items added or removed meanwhile do not make
        the listing skip or repeat the others."""
        limit = PAGE_FIRST
        cursor = None
        while True:
            records, cursor, size = self._run(index_page, reverse, cursor, limit, values)
            for rec in records:
                yield rec
            if not cursor:
                return
            limit = _next_limit(limit, len(records), size)

    def __iter__(self):
        """Keys in insertion order."""
        for header, _ in self._records():
            yield wire.record_key(header)

    def __reversed__(self):
        """Keys in reverse insertion order."""
        for header, _ in self._records(reverse=True):
            yield wire.record_key(header)

    def keys(self):
        """A set-like view of the keys."""
        return collections.abc.KeysView(self)

    def values(self):
        """A view of the values, in insertion order."""
        return _ValuesView(self)

    def items(self):
        """A set-like view of the ``(key, value)`` pairs, in insertion
        order."""
        return _ItemsView(self)

    __hash__ = None

    def __eq__(self, other):
        """Equality with a mapping, as python-diskcache's: against an Index
        or an OrderedDict the order matters, against other mappings it does
        not. Anything that is not a mapping is not equal."""
        if not isinstance(other, collections.abc.Mapping):
            return NotImplemented
        if len(self) != len(other):
            return False
        if isinstance(other, _ordered_types()):
            theirs = other.items()
            return all(mine_key == their_key and mine_value == their_value
                       for (mine_key, mine_value), (their_key, their_value)
                       in zip(self.items(), theirs))
        return all(value == other.get(key, ENOVAL) for key, value in self.items())

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def memoize(self, name=None, typed=False, ignore=()):
        """Memoizing decorator storing results in the index, with
        python-diskcache's ``Index.memoize`` keys (``args_to_key`` tuples)."""
        if callable(name):
            raise TypeError('name cannot be callable')

        def decorator(func):
            base = (full_name(func),) if name is None else (name,)

            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                key = wrapper.__cache_key__(*args, **kwargs)
                result = self._run(index_get, key)
                if result is ENOVAL:
                    result = func(*args, **kwargs)
                    self._run(index_set, key, result)
                return result

            def __cache_key__(*args, **kwargs):
                return args_to_key(base, args, kwargs, typed, ignore)

            wrapper.__cache_key__ = __cache_key__
            return wrapper

        return decorator


def _prefix(prefix):
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise TypeError('prefix must be None or a str, not %s' % type(prefix).__name__)
    if not prefix:
        # The server reads an empty ?prefix= as no prefix (int keys), while
        # python-diskcache makes '-500000000000000' text keys of it.
        raise ValueError("an empty prefix is not supported; use None or a non-empty str")
    return prefix
