"""Cache operations as I/O-free generators.

Each operation yields a :class:`~diskcache_client.transport.Request` (or a
list of them, one per shard, answered in order) and receives the matching
:class:`~diskcache_client.transport.Response` (or list, where a request that
failed has its :class:`~diskcache_client.errors.CacheServerError` in place of
an answer: :func:`check` raises it); its return value is
the operation's result. :meth:`Client.run` and :meth:`Client.arun` drive
them over blocking sockets or asyncio. ``c`` is the
:class:`~diskcache_client.transport.Client` (for key-to-shard routing: its
``shard_of``, ``targets``, ``shards`` and ``retries``; a named cache of a
client that follows a topology passes a
:class:`~diskcache_client.topology.Pinned` view of it) and ``prefix`` the
escaped path of the addressed cache: ``/v1`` for the server's cache,
``/v1/caches/<name>`` for a named cache.
"""

import json
from collections import defaultdict

from . import wire
from .errors import CacheServerError, Timeout, error_from_response, error_of
from .http11 import Request
from .routing import routing_bytes
from .topology import SCOPE_HEADER

# Keys per batch request (the server accepts up to 10000).
BATCH_SIZE = 1000

_VALUE_TYPE = wire.HEADER_VALUE_TYPE
_VALUE_TYPE_LC = _VALUE_TYPE.lower()  # as it keys Response.headers


def check(resp, *ok):
    """Raise the error an answer carries unless its status is in ``ok``
    (default: any 2xx), or the error in its place."""
    if isinstance(resp, CacheServerError):
        raise resp
    if (resp.status in ok) if ok else (200 <= resp.status < 300):
        return resp
    raise error_of(resp)


def _json(resp):
    check(resp)
    return json.loads(resp.body) if resp.body else {}


def _is_miss(resp):
    """A 404 that means "no such key". A 404 for a route the server does not
    have is raised instead of being taken for a miss."""
    if resp.status != 404:
        return False
    if b'no route' not in resp.body:
        return True  # its message cannot start so: no need to parse it
    err = error_of(resp)
    if err.message.startswith('no route'):
        raise err
    return True


def shape(value, expire_time, tag, want_expire_time, want_tag):
    """python-diskcache's result shapes for get and pop."""
    if want_expire_time and want_tag:
        return value, expire_time, tag
    if want_expire_time:
        return value, expire_time
    if want_tag:
        return value, tag
    return value


def key_target(key, params=()):
    """``(routing, segment, query_pairs)`` addressing a key as a ``{key}``
    path segment: its routing bytes (:func:`routing.routing_bytes`), the
    escaped segment, and ``kt``/``ke`` (when needed) ahead of ``params``."""
    kind, raw = wire.encode_key(key)
    segment, encoding = wire.key_segment(raw)
    if kind == 'text' and not encoding:
        return raw, segment, params  # the common case: nothing to add
    query = list(params)
    if encoding:
        query.insert(0, ('ke', encoding))
    if kind != 'text':
        query.insert(0, ('kt', kind))
    return routing_bytes(kind, raw), segment, query


def key_request(c, prefix, key, method, suffix='', params=(), **kwargs):
    """A request addressing one key: ``{prefix}/keys/{key}{suffix}``."""
    routing, segment, query = key_target(key, params)
    return Request(method, prefix + '/keys/' + segment + suffix,
                   query=wire.build_query(query) if query else '',
                   shard=c.shard_of(routing), **kwargs)


def _value(resp, read=False):
    """Decode the value of a single-item answer."""
    value_type = resp.headers.get(_VALUE_TYPE_LC, 'bytes')
    if resp.stream is not None:
        if read and value_type == 'bytes':
            return resp.stream
        with resp.stream as stream:
            return wire.decode_value(value_type, stream.read())
    return wire.decode_value(value_type, resp.body)


def _shaped(resp, read, expire_time, tag):
    """A single-item answer in python-diskcache's shape for get and pop;
    the expiry and tag headers are decoded only when asked for."""
    value = _value(resp, read)
    if not (expire_time or tag):
        return value
    return shape(value, wire.expire_time_from_headers(resp.headers),
                 wire.tag_from_headers(resp.headers), expire_time, tag)


# -- single keys --------------------------------------------------------------

def get(c, prefix, key, default=None, read=False, expire_time=False, tag=False):
    resp = yield key_request(c, prefix, key, 'GET', idempotent=True, stream=read)
    if _is_miss(resp):
        return shape(default, None, None, expire_time, tag)
    check(resp)
    return _shaped(resp, read, expire_time, tag)


def contains(c, prefix, key):
    resp = yield key_request(c, prefix, key, 'HEAD', idempotent=True)
    if _is_miss(resp):
        return False
    check(resp)
    return True


_PLAIN_TYPES = (bytes, str, int, float)


def _value_request(c, prefix, key, method, suffix, value, expire, read, tag, idempotent):
    # As python-diskcache's Disk.store: bytes, str, int and float values are
    # stored as they are, whatever ``read`` says; only other values are read.
    if read and type(value) not in _PLAIN_TYPES:
        value_type, body = 'bytes', wire.iter_file(value)
    else:
        value_type, body = wire.encode_value(value)
    return key_request(c, prefix, key, method, suffix, wire.set_params(expire, tag),
                       headers={_VALUE_TYPE: value_type}, body=body,
                       idempotent=idempotent)


def set(c, prefix, key, value, expire=None, read=False, tag=None):  # pylint: disable=redefined-builtin
    resp = yield _value_request(c, prefix, key, 'PUT', '', value, expire, read, tag, True)
    check(resp)
    return True


def add(c, prefix, key, value, expire=None, read=False, tag=None):
    resp = yield _value_request(c, prefix, key, 'POST', '/add', value, expire, read, tag, False)
    return bool(_json(resp).get('added'))


def replace(c, prefix, key, value, expire=None, read=False, tag=None):
    """Store ``value`` only if ``key`` has a live item (Redis's SET XX)."""
    # Repeatable: a second replace of a live item stores the same again.
    resp = yield _value_request(c, prefix, key, 'POST', '/replace', value, expire, read, tag, True)
    return bool(_json(resp).get('replaced'))


def touch(c, prefix, key, expire=None):
    resp = yield key_request(c, prefix, key, 'POST', '/touch', wire.set_params(expire),
                             idempotent=True)
    return bool(_json(resp).get('touched'))


def delete(c, prefix, key):
    resp = yield key_request(c, prefix, key, 'DELETE', idempotent=True)
    return bool(_json(resp).get('deleted'))


def pop(c, prefix, key, default=None, expire_time=False, tag=False):
    resp = yield key_request(c, prefix, key, 'POST', '/pop')
    if _is_miss(resp):
        return shape(default, None, None, expire_time, tag)
    check(resp)
    return _shaped(resp, False, expire_time, tag)


def incr(c, prefix, key, delta=1, default=0, decrement=False):
    """Atomic increment on the server. A missing key starts at ``default``;
    ``default=None`` makes a missing key raise KeyError. A non-numeric value
    raises TypeError; leaving 64 bits raises OverflowError."""
    params = [('delta', wire.format_number(delta)),
              ('default', 'none' if default is None else wire.format_number(default))]
    resp = yield key_request(c, prefix, key, 'POST', '/decr' if decrement else '/incr', params)
    if _is_miss(resp):
        raise KeyError(key)
    if resp.status == 409:
        err = error_of(resp)
        if err.code == 'overflow':
            raise OverflowError('incr of %r: %s' % (key, err.message))
        raise TypeError('cannot incr/decr %r: %s' % (key, err.message))
    check(resp)
    return _value(resp)


# -- batches --------------------------------------------------------------------

def _by_shard(c, keys):
    """Chunks of (shard, [(index, key)]) of at most BATCH_SIZE keys."""
    groups = defaultdict(list)
    for index, key in enumerate(keys):
        kind, raw = wire.encode_key(key)
        groups[c.shard_of(routing_bytes(kind, raw))].append((index, key))
    chunks = []
    for shard in sorted(groups):
        items = groups[shard]
        for start in range(0, len(items), BATCH_SIZE):
            chunks.append((shard, items[start:start + BATCH_SIZE]))
    return chunks


def get_many(c, prefix, keys):
    """[(found, value)] per key, in order."""
    keys = list(keys)
    chunks = _by_shard(c, keys)
    if not chunks:
        return []
    resps = yield [
        Request('POST', prefix + '/batch/get', shard=shard, idempotent=True,
                headers={'Content-Type': 'application/json'},
                body=wire.keys_body([k for _, k in items]))
        for shard, items in chunks
    ]
    results = [(False, None)] * len(keys)
    for (shard, items), resp in zip(chunks, resps):
        check(resp)
        records = list(wire.iter_records(resp.body))
        if len(records) != len(items):
            raise ValueError('batch get answered %d records for %d keys'
                             % (len(records), len(items)))
        for (index, _), (header, data) in zip(items, records):
            if header.get('error'):
                # A shard that split this part by a newer topology could
                # not reach the key's owner: as if the part had failed.
                raise error_from_response(
                    503 if header['error'] == 'shard_unavailable' else 502,
                    json.dumps({'error': header['error'],
                                'message': header.get('message', '')}).encode(),
                    resp.url)
            if header.get('found', True) and header.get('type'):
                results[index] = (True, wire.decode_value(header['type'], data))
    return results


def set_many(c, prefix, items):
    """Store ``[(key, value, expire, tag)]``; return the indexes that failed.

    Values are encoded before anything is sent, so pickling errors reach the
    caller with nothing stored.
    """
    items = list(items)
    records = [wire.set_record(key, value, expire, tag) for key, value, expire, tag in items]
    chunks = _by_shard(c, [item[0] for item in items])
    if not chunks:
        return []
    resps = yield [
        Request('POST', prefix + '/batch/set', shard=shard, idempotent=True,
                headers={'Content-Type': wire.RECORDS_CONTENT_TYPE},
                body=b''.join(records[index] for index, _ in chunk))
        for shard, chunk in chunks
    ]
    failed = []
    error = None
    for (shard, chunk), resp in zip(chunks, resps):
        try:
            doc = _json(resp)
        except CacheServerError as exc:
            error = error or exc
            failed.extend(_part_failed(chunk, resp))
            continue
        for failure in doc.get('failed') or ():
            failed.append(chunk[failure['index']][0])
    failed.sort()
    if error is not None:
        # The other parts were stored: the error says which items were not.
        error.failed = failed
        raise error
    return failed


def _part_failed(chunk, resp):
    """The item indexes of a batch set part that failed: those a server's
    ``502 partial_failure`` names (a shard of several that could not reach
    some owners), else all of them."""
    if not isinstance(resp, CacheServerError) and resp.status == 502:
        try:
            named = json.loads(resp.body).get('failed')
            return [chunk[f['index']][0] for f in named]
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            pass
    return [index for index, _ in chunk]


def delete_many(c, prefix, keys):
    """[deleted] per key, in order."""
    keys = list(keys)
    chunks = _by_shard(c, keys)
    if not chunks:
        return []
    resps = yield [
        Request('POST', prefix + '/batch/delete', shard=shard, idempotent=True,
                headers={'Content-Type': 'application/json'},
                body=wire.keys_body([k for _, k in items]))
        for shard, items in chunks
    ]
    results = [False] * len(keys)
    for (shard, items), resp in zip(chunks, resps):
        deleted = _json(resp).get('deleted') or []
        for (index, _), flag in zip(items, deleted):
            results[index] = bool(flag)
    return results


# -- whole-cache operations -------------------------------------------------------

def _scoped(c, headers=None):
    """The headers of a whole-cache request: with a list of shard URLs the
    client adds up the servers' results itself, so each server is asked for
    its own part only (``Diskcache-Scope: shard``; a server that belongs to
    a topology would otherwise fan the operation out to every shard)."""
    if c.shards <= 1:
        return headers
    scoped = dict(headers or {})
    scoped[SCOPE_HEADER] = 'shard'
    return scoped


def _everywhere(c, method, path, query='', headers=None, **kwargs):
    headers = _scoped(c, headers)
    return [Request(method, path, query=query, shard=shard, headers=headers, **kwargs)
            for shard in c.targets()]


def remove(c, prefix, what, params=()):
    """evict/expire/cull/clear on every shard; the count removed.

    Like python-diskcache's FanoutCache, a shard whose database stays busy
    part way (503 ``timeout`` with a ``removed`` count) is asked again, the
    counts adding up, for as long as it makes progress; without progress it
    gets ``c.retries`` more tries, then :class:`Timeout` is raised (its
    ``removed`` counting everything removed so far). A shard that fails
    otherwise does not stop the others: once they answered, its error is
    raised with ``removed`` set to what they removed.
    """
    query = wire.build_query(params)
    headers = _scoped(c)
    pending = list(c.targets())
    total = 0
    stalls = 0
    while pending:
        resps = yield [Request('POST', prefix + '/' + what, query=query, shard=shard,
                               headers=headers, idempotent=True, retry_unavailable=False)
                       for shard in pending]
        again = []
        progress = False
        last = None
        failure = None
        for shard, resp in zip(pending, resps):
            try:
                total += int(_json(resp).get('removed', 0))
            except Timeout as err:
                total += err.removed
                progress = progress or err.removed > 0
                again.append(shard)
                last = err
            except CacheServerError as err:
                failure = failure or err
        if failure is not None:
            failure.removed = total
            raise failure
        if again and not progress:
            stalls += 1
            if stalls > c.retries:
                raise Timeout(last.message, url=last.url, removed=total)
        pending = again
    return total


def stats(c, prefix, enable=True, reset=False):
    params = [('enable', 'true' if enable else 'false'), ('reset', 'true' if reset else 'false')]
    resps = yield _everywhere(c, 'POST', prefix + '/stats', wire.build_query(params))
    hits = misses = 0
    for resp in resps:
        doc = _json(resp)
        hits += int(doc.get('hits', 0))
        misses += int(doc.get('misses', 0))
    return hits, misses


def drop(c, prefix):
    """Remove a named cache, its items, settings and files, on every shard
    that holds part of it; the count removed."""
    resps = yield _everywhere(c, 'DELETE', prefix, idempotent=True)
    return sum(int(_json(resp).get('removed', 0)) for resp in resps)


def collections_page(c, kind=None, prefix='', after='', limit=None):
    """A page of the named collections (``GET /v1/collections``):
    ``(entries, next)``, ``entries`` being ``{'kind', 'name', 'bytes'}``
    dicts by kind then name, ``next`` the ``after`` of the next page (''
    on the last one). With a list of shard URLs each is asked for its own
    and the pages merge as the server merges its shards'."""
    params = [(k, v) for k, v in (('kind', kind), ('prefix', prefix), ('after', after)) if v]
    if limit:
        params.append(('limit', str(limit)))
    resps = yield _everywhere(c, 'GET', '/v1/collections', query=wire.build_query(params),
                              idempotent=True)
    merged, more = {}, False
    for resp in resps:
        doc = _json(resp)
        more = more or bool(doc.get('next'))
        for e in doc.get('collections') or []:
            cid = e['kind'] + '/' + e['name']
            if cid in merged:
                merged[cid]['bytes'] += e['bytes']
            else:
                merged[cid] = dict(e)
    ids = sorted(merged)
    page_size = limit or 1000
    if len(ids) > page_size:
        ids, more = ids[:page_size], True
    return [merged[cid] for cid in ids], (ids[-1] if more and ids else '')


def info(c, prefix):
    """{'count', 'volume', 'settings'} added up over the shards."""
    resps = yield _everywhere(c, 'GET', prefix + '/info', idempotent=True)
    out = {'count': 0, 'volume': 0, 'settings': {}}
    for resp in resps:
        doc = _json(resp)
        out['count'] += int(doc.get('count', 0))
        out['volume'] += int(doc.get('volume', 0))
        if not out['settings']:
            out['settings'] = doc.get('settings') or {}
    return out


def check_cache(c, prefix, fix=False):
    query = wire.build_query([('fix', 'true' if fix else 'false')])
    resps = yield _everywhere(c, 'POST', prefix + '/check', query, idempotent=not fix)
    warnings = []
    for resp in resps:
        warnings.extend(_json(resp).get('warnings') or [])
    return warnings


def tag_index(c, prefix, create):
    resps = yield _everywhere(c, 'PUT' if create else 'DELETE', prefix + '/tag-index',
                              idempotent=True)
    for resp in resps:
        check(resp)


def settings(c, prefix, changes=None):
    """Read the settings (first shard), or change runtime settings on every
    shard and return them."""
    if changes is None:
        (resp,) = yield [Request('GET', prefix + '/settings', shard=c.targets()[0],
                                 idempotent=True, headers=_scoped(c))]
        return _json(resp)
    body = json.dumps(changes).encode('utf-8')
    resps = yield _everywhere(c, 'PATCH', prefix + '/settings', idempotent=True,
                              headers={'Content-Type': 'application/json'}, body=body)
    result = {}
    for resp in resps:
        result = _json(resp)
    return result


# -- a named cache's queues and keys (python-diskcache's Cache) ---------------

def push(c, prefix, routing, value, params, expire=None, read=False, tag=None):
    """python-diskcache's ``Cache.push``: the new key. ``routing`` names
    the server of the queue (the cache's name), ``params`` its prefix and
    side."""
    if read and type(value) not in _PLAIN_TYPES:
        value_type, body = 'bytes', wire.iter_file(value)
    else:
        value_type, body = wire.encode_value(value)
    params = list(params) + list(wire.set_params(expire, tag))
    resp = yield Request('POST', prefix + '/push', query=wire.build_query(params),
                         shard=c.shard_of(routing), headers={_VALUE_TYPE: value_type},
                         body=body)
    if resp.status == 409:
        err = error_of(resp)
        if err.code == 'not_numeric':
            raise ValueError(err.message)  # as python-diskcache's int() says
    return wire.json_key(_json(resp))


def take(c, prefix, routing, what, params, default, expire_time=False, tag=False):
    """pull, peek or peekitem (``what``): ``(key, value)`` in
    python-diskcache's shapes, or ``default`` (shaped too) when empty."""
    resp = yield Request('POST' if what == 'pull' else 'GET', prefix + '/' + what,
                         query=wire.build_query(params), shard=c.shard_of(routing),
                         idempotent=what != 'pull')
    if _is_miss(resp):
        return shape(default, None, None, expire_time, tag)
    check(resp)
    item = (wire.key_from_headers(resp.headers), _value(resp))
    if not (expire_time or tag):
        return item
    return shape(item, wire.expire_time_from_headers(resp.headers),
                 wire.tag_from_headers(resp.headers), expire_time, tag)


def keys_page(c, prefix, shard, order, reverse, cursor, limit, match=None):
    """A page of ``GET {prefix}/keys`` from ``shard``: ``(record headers,
    next cursor or None)``; ``match`` keeps the text keys that match a
    Redis-style glob (a page may then be empty and not the last)."""
    params = [('order', order), ('reverse', 'true' if reverse else 'false'),
              ('limit', str(limit))]
    if match is not None:
        params.append(('match', match))
    if cursor:
        params.append(('cursor', cursor))
    resp = yield Request('GET', prefix + '/keys', query=wire.build_query(params), shard=shard,
                         headers=_scoped(c), idempotent=True)
    check(resp)
    return ([header for header, _ in wire.iter_records(resp.body)],
            resp.header(wire.HEADER_NEXT_CURSOR) or None)
