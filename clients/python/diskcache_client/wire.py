"""The cacheserver wire format: how keys, values and tags travel.

This module does no I/O. It mirrors ``cacheserver/wire`` on the Go side:

* A key is one URL path segment (percent-encoded, ``/`` included) plus its
  kind in ``?kt=`` (``text`` when absent, ``bytes``, ``int``, ``float`` or
  ``pickle``). Keys are mapped to kinds the way python-diskcache's ``Disk.put``
  stores them, so that a directory written by python-diskcache reads back
  under the same Python keys: ``str`` is text, ``bytes`` is bytes, ``int``
  within 64 bits is int, ``float`` is float and anything else is pickled
  (highest protocol, ``pickletools.optimize``-d, exactly as python-diskcache
  does, so that pickled keys compare equal byte for byte).
* A value is the raw request/response body with its type in the
  ``Diskcache-Value-Type`` header: ``int`` (not ``bool``) and ``float`` travel
  as decimal numbers so the server can ``incr``/``decr`` them atomically,
  ``str`` as UTF-8 ``text``, ``bytes`` as ``bytes`` and everything else as a
  ``pickle`` (highest protocol) that only the client ever loads. A NaN float
  is a pickle too: SQLite stores NaN as NULL, which reads back as ``None``.
* Tags are ``str``, ``bytes``, ``int`` or ``float`` (``None`` means no tag).
  As python-diskcache binds them, ``bool`` is the int and NaN is no tag.
* Batch requests and responses use the record stream: one JSON header line
  followed by exactly ``len`` raw value bytes, repeated.
"""

import base64
import json
import numbers
import pickle
import pickletools
from urllib.parse import unquote_to_bytes

from .errors import CacheServerError

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1

HEADER_VALUE_TYPE = 'Diskcache-Value-Type'
HEADER_EXPIRE_TIME = 'Diskcache-Expire-Time'
HEADER_TAG = 'Diskcache-Tag'
HEADER_TAG_TYPE = 'Diskcache-Tag-Type'
HEADER_KEY = 'Diskcache-Key'
HEADER_KEY_TYPE = 'Diskcache-Key-Type'
HEADER_TOTAL = 'Diskcache-Total'  # a deque listing's deque length
HEADER_NEXT_CURSOR = 'Diskcache-Next-Cursor'  # an index listing's next page

RECORDS_CONTENT_TYPE = 'application/x-diskcache-records'

# The header names as they key Response.headers (lower-cased).
_KEY = HEADER_KEY.lower()
_KEY_TYPE = HEADER_KEY_TYPE.lower()
_TAG = HEADER_TAG.lower()
_TAG_TYPE = HEADER_TAG_TYPE.lower()
_EXPIRE_TIME = HEADER_EXPIRE_TIME.lower()

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _is_int64(value):
    return INT64_MIN <= value <= INT64_MAX


def format_float(value):
    """Write a float so that Go's ParseFloat and Python's float() agree."""
    # repr() gives the shortest round-tripping form ('0.1', '1e+16', 'inf',
    # 'nan'); Go's strconv.ParseFloat reads all of them.
    return repr(float(value))


def format_number(value):
    """Write an int or float for a query parameter or a number body."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    raise TypeError('expected an int or float, got %s' % type(value).__name__)


# The largest key any server takes (its --max-key-bytes is at most this):
# a longer one is refused here, with the error a server gives, rather than
# sent in a URL past what HTTP servers read (431, no JSON).
MAX_KEY_BYTES = 128 << 10


def encode_key(key):
    """Return ``(kind, raw_bytes)`` for a Python key."""
    # pylint: disable=unidiomatic-typecheck
    kind = type(key)
    if kind is str:
        out = 'text', key.encode('utf-8')
    elif kind is bytes:
        out = 'bytes', key
    elif kind is int and _is_int64(key):
        return 'int', str(key).encode('ascii')
    elif kind is float:
        return 'float', format_float(key).encode('ascii')
    else:
        out = 'pickle', pickletools.optimize(pickle.dumps(key, protocol=PICKLE_PROTOCOL))
    if len(out[1]) > MAX_KEY_BYTES:
        raise CacheServerError('key is %d bytes; a server takes at most %d (--max-key-bytes)'
                               % (len(out[1]), MAX_KEY_BYTES), status=400, code='key_too_large')
    return out


def decode_key(raw, kind):
    """Inverse of :func:`encode_key` (``raw`` is bytes)."""
    if kind in ('', 'text', None):
        return raw.decode('utf-8')
    if kind == 'bytes':
        return bytes(raw)
    if kind == 'int':
        return int(raw)
    if kind == 'float':
        return float(raw)
    if kind == 'pickle':
        return pickle.loads(raw)
    raise ValueError('unknown key kind %r' % kind)


# Percent-encoding tables, indexed by byte: unreserved characters (RFC 3986)
# stay, every other byte becomes %XX (as urllib.parse.quote(raw, safe='')
# writes it). Path segments escape '.' too.
_UNRESERVED = frozenset(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~')
_QUERY_ESCAPES = tuple(chr(b) if b in _UNRESERVED else '%%%02X' % b for b in range(256))
# A path segment may hold unreserved characters, sub-delims, ':' and '@' as
# they are (RFC 3986 pchar): Django's keys (':1:name') then need no escape,
# and a server reads a path without escapes cheaper.
_SEGMENT_KEPT = _UNRESERVED | frozenset(b":@!$&'()*+,;=")
_SEGMENT_ESCAPES = tuple(chr(b) if b in _SEGMENT_KEPT else '%%%02X' % b for b in range(256))
_SEGMENT_KEPT_BYTES = bytes(sorted(_SEGMENT_KEPT))


def path_segment(raw):
    """Percent-encode bytes as exactly one URL path segment.

    Everything but pchar characters is escaped, including ``/``; the keys
    ``.`` and ``..`` are escaped whole so that they are not taken as
    relative path segments.
    """
    if raw in (b'.', b'..'):
        return '%2E' * len(raw)
    if not raw.translate(None, _SEGMENT_KEPT_BYTES):
        return raw.decode('ascii')  # nothing to escape: the common key
    return ''.join(map(_SEGMENT_ESCAPES.__getitem__, raw))


def key_segment(raw):
    """Return ``(segment, encoding)`` for a key's bytes in a ``{key}`` path.

    HTTP routing cannot carry the keys ``b''`` and ``b'/'`` percent-encoded,
    so those go as unpadded base64url with ``?ke=base64`` (``=`` is the empty
    key); every other key is percent-encoded and needs no ``ke``.
    """
    if raw == b'':
        return '=', 'base64'
    if raw == b'/':
        return base64.urlsafe_b64encode(raw).decode('ascii').rstrip('='), 'base64'
    return path_segment(raw), ''


def query_value(raw):
    """Percent-encode str or bytes for a query string."""
    if isinstance(raw, str):
        raw = raw.encode('utf-8')
    return ''.join(map(_QUERY_ESCAPES.__getitem__, raw))


def build_query(params):
    """Build a query string from ``(name, value)`` pairs (values str/bytes)."""
    if not params:
        return ''
    return '&'.join(['%s=%s' % (name, query_value(value)) for name, value in params])


def encode_value(value):
    """Return ``(value_type, body_bytes)`` for a Python value.

    Pickling errors propagate to the caller.
    """
    # pylint: disable=unidiomatic-typecheck
    kind = type(value)
    if kind is bytes:
        return 'bytes', value
    if kind is str:
        try:
            return 'text', value.encode('utf-8')
        except UnicodeEncodeError:
            # Lone surrogates are not UTF-8: keep the exact str as a pickle.
            pass
    elif kind is int and _is_int64(value):
        return 'int', str(value).encode('ascii')
    elif kind is float and value == value:
        return 'float', format_float(value).encode('ascii')
    # NaN goes as a pickle: SQLite would store it as NULL, which reads back
    # as None (as python-diskcache's own NaN values do).
    return 'pickle', pickle.dumps(value, protocol=PICKLE_PROTOCOL)


def decode_value(value_type, body):
    """Turn a body of the given ``Diskcache-Value-Type`` into a Python value."""
    if value_type in ('bytes', '', None):
        return bytes(body)
    if value_type == 'text':
        return bytes(body).decode('utf-8')
    if value_type == 'int':
        return int(body)
    if value_type == 'float':
        return float(body)
    if value_type == 'pickle':
        return pickle.loads(body)
    raise ValueError('unknown value type %r' % value_type)


def encode_tag(tag):
    """Return ``(kind, raw_bytes)`` for a tag; ``None`` gives ``(None, None)``."""
    # pylint: disable=unidiomatic-typecheck
    if tag is None or (type(tag) is float and tag != tag):
        # python-diskcache binds NaN as SQLite's NULL: no tag.
        return None, None
    if type(tag) is bool:
        tag = int(tag)  # as SQLite binds it, and python-diskcache reads 1 back
    kind = type(tag)
    if kind is str:
        return 'text', tag.encode('utf-8')
    if kind is bytes:
        return 'bytes', tag
    if kind is int and _is_int64(tag):
        return 'int', str(tag).encode('ascii')
    if kind is float:
        return 'float', format_float(tag).encode('ascii')
    raise TypeError(
        'a tag must be str, bytes, int (64-bit) or float, not %s'
        % type(tag).__name__
    )


def decode_tag(raw, kind):
    """Inverse of :func:`encode_tag`."""
    if kind == 'none':
        return None
    return decode_key(raw, kind or 'text')


# The server turns ?expire= into a Go time.Duration (int64 nanoseconds),
# which overflows past about 292 years: an expire of 1e10 seconds would be
# stored as already expired. Longer expiries are sent as this (~291 years).
MAX_EXPIRE_SECONDS = 9.2e9


def clamp_expire(expire):
    """``expire`` in seconds, bounded to what the server can represent."""
    if not isinstance(expire, numbers.Real):
        # python-diskcache adds it to time.time(): a str is a TypeError.
        raise TypeError('expire must be a number of seconds, not %s' % type(expire).__name__)
    expire = float(expire)
    return max(-MAX_EXPIRE_SECONDS, min(MAX_EXPIRE_SECONDS, expire))


def set_params(expire=None, tag=None):
    """Query parameters of set/add: ``expire`` (seconds) and ``tag``."""
    params = []
    if expire is not None:
        params.append(('expire', format_float(clamp_expire(expire))))
    kind, raw = encode_tag(tag)
    if kind is not None:
        params.append(('tag', raw))
        if kind != 'text':
            params.append(('tt', kind))
    return params


def key_from_headers(headers):
    """Read the key of a response that names its item (``Diskcache-Key``
    and ``Diskcache-Key-Type``, as popitem, peekitem and pull answer), or
    None when it has none."""
    raw = headers.get(_KEY)
    if raw is None:
        return None
    kind = headers.get(_KEY_TYPE) or 'text'
    return decode_key(unquote_to_bytes(raw), kind)


def tag_from_headers(headers):
    """Read the tag of a single-item response (``None`` if it has none)."""
    raw = headers.get(_TAG)
    kind = headers.get(_TAG_TYPE)
    if raw is None and kind is None:
        return None
    return decode_tag(unquote_to_bytes(raw or ''), kind or 'text')


def expire_time_from_headers(headers):
    """Read the absolute expiry (epoch seconds) of a response, or None."""
    value = headers.get(_EXPIRE_TIME)
    return None if value in (None, '') else float(value)


def key_json(key):
    """Encode a key the way JSON bodies and record headers carry it."""
    kind, raw = encode_key(key)
    return _raw_json(kind, raw, 'key', 'kt')


def _raw_json(kind, raw, name, kind_name):
    if kind == 'text':
        return {name: raw.decode('utf-8')}
    if kind in ('bytes', 'pickle'):
        return {name: base64.b64encode(raw).decode('ascii'), kind_name: kind}
    return {name: raw.decode('ascii'), kind_name: kind}


def keys_body(keys):
    """JSON body of batch get and batch delete."""
    return json.dumps({'keys': [key_json(k) for k in keys]}).encode('utf-8')


def record(header, value):
    """One record of a record stream (``header`` gets ``len``)."""
    header = dict(header, len=len(value))
    line = json.dumps(header, separators=(',', ':')).encode('utf-8')
    return line + b'\n' + value


def set_record(key, value, expire=None, tag=None):
    """A batch set record for one item; pickling errors propagate."""
    header = key_json(key)
    value_type, body = encode_value(value)
    header['type'] = value_type
    if expire is not None:
        header['expire'] = clamp_expire(expire)
    tag_kind, tag_raw = encode_tag(tag)
    if tag_kind is not None:
        header.update(_raw_json(tag_kind, tag_raw, 'tag', 'tt'))
    return record(header, body)


def iter_records(body):
    """Iterate ``(header, value_bytes)`` over a record stream held in bytes."""
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        newline = body.find(b'\n', pos)
        if newline < 0:
            raise ValueError('record stream: header without newline')
        header = json.loads(bytes(view[pos:newline]))
        length = header.get('len', 0)
        start = newline + 1
        if start + length > end:
            raise ValueError('record stream: value shorter than its len')
        yield header, bytes(view[start:start + length])
        pos = start + length


def value_record(value):
    """A record carrying only a value (deque extend); pickling errors
    propagate."""
    value_type, body = encode_value(value)
    return record({'type': value_type}, body)


def record_key(header):
    """The key of a record header (listings), as a Python key."""
    kind = header.get('kt') or 'text'
    raw = header.get('key', '')
    if kind in ('bytes', 'pickle'):
        return decode_key(base64.b64decode(raw), kind)
    return decode_key(raw.encode('utf-8'), kind)


def json_key(doc):
    """The key of a JSON answer ``{"key": ..., "kt": ...}`` that writes the
    key as its text (index push: int keys, or text ``prefix-NNN`` keys)."""
    return decode_key(doc.get('key', '').encode('utf-8'), doc.get('kt') or 'text')


def record_tag(header):
    """The tag of a record header, or None."""
    if 'tag' not in header:
        return None
    kind = header.get('tt') or 'text'
    raw = header['tag']
    if kind == 'bytes':
        return base64.b64decode(raw)
    return decode_key(raw.encode('utf-8'), kind)


def iter_file(fileobj, chunk_size=1 << 16):
    """Yield the bytes of a file-like object (str chunks as UTF-8)."""
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return
        if isinstance(chunk, str):
            chunk = chunk.encode('utf-8')
        yield bytes(chunk)
