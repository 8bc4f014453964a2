"""python-diskcache as a test oracle for the Go engine's compatibility tests.

Run by engine/compat_test.go as `python3 oracle.py COMMAND` with a JSON
request on stdin; it answers with one JSON document on stdout. Values travel
in a typed encoding, so that bytes, big integers and exact floats survive JSON:

    {"t": "bytes", "b64": ...}        bytes
    {"t": "str", "b64": ...}          str, as base64 of its UTF-8
    {"t": "int", "v": "123"}          int in the signed 64-bit range
    {"t": "float", "bits": "3ff0..."} float, as its big-endian IEEE-754 bits
    {"t": "other", "type": "dict", "repr": "..."}  anything else (read back)
    {"t": "pickle", "b64": ...}       (input) an object given by its pickle
    {"t": "expr", "repr": "..."}      (input) an object given by an expression
    {"t": "missing"}                  (output) no such item

Commands:
    pickles  {"exprs": {name: expr}} -> {name: {"key_b64", "value_b64", "desc"}}
    hash     {"keys": [enc]} -> [{"hash", "raw", "db"}]
    write    {"dir", "settings", "ops": [op]} -> {"results": [...], "state": state}
    read     {"dir", "keys": [enc], "stream": [enc]} -> {"state", "items", "streams"}
"""

import base64
import io
import json
import os
import pickle
import pickletools
import sqlite3
import struct
import sys
import warnings

import diskcache

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1
EVAL_GLOBALS = {
    '__builtins__': {},
    'range': range,
    'list': list,
    'dict': dict,
    'tuple': tuple,
    'set': set,
    'frozenset': frozenset,
    'bytes': bytes,
    'str': str,
}


def b64(data):
    return base64.b64encode(bytes(data)).decode('ascii')


def enc(value):
    """Typed encoding of a Python value as read from a cache."""
    kind = type(value)
    if kind is bytes:
        return {'t': 'bytes', 'b64': b64(value)}
    if kind is str:
        return {'t': 'str', 'b64': b64(value.encode('utf-8'))}
    if kind is int and INT64_MIN <= value <= INT64_MAX:
        return {'t': 'int', 'v': str(value)}
    if kind is float:
        return {'t': 'float', 'bits': struct.pack('!d', value).hex()}
    return {'t': 'other', 'type': kind.__name__, 'repr': repr(value)}


def enc_opt(value):
    return None if value is None else enc(value)


def bits(value):
    return None if value is None else struct.pack('!d', value).hex()


def dec(e):
    """The Python object a typed encoding stands for."""
    if e is None:
        return None
    kind = e['t']
    if kind == 'bytes':
        return base64.b64decode(e['b64'])
    if kind == 'str':
        return base64.b64decode(e['b64']).decode('utf-8')
    if kind == 'int':
        return int(e['v'])
    if kind == 'float':
        return struct.unpack('!d', bytes.fromhex(e['bits']))[0]
    if kind == 'pickle':
        return pickle.loads(base64.b64decode(e['b64']))
    if kind == 'expr':
        return eval(e['repr'], EVAL_GLOBALS, {})  # test inputs only
    raise ValueError('cannot decode %r' % (e,))


def enc_db(value, raw):
    """Typed encoding of a key or tag column as stored (pickles kept)."""
    if not raw:
        return {'t': 'pickle', 'b64': b64(value)}
    return enc(value)


def plain_db(db_key):
    """A key as Disk.put returns it, with sqlite3.Binary made bytes."""
    return bytes(db_key) if isinstance(db_key, memoryview) else db_key


def connect(directory):
    con = sqlite3.connect(
        os.path.join(directory, diskcache.core.DBNAME), isolation_level=None
    )
    return con


def row_of(cache, con, key):
    """The stored columns of key's row, and the stored bytes of its value."""
    db_key, raw = cache.disk.put(key)
    rows = con.execute(
        'SELECT rowid, mode, filename, size, value, typeof(value),'
        ' expire_time, tag FROM Cache WHERE key = ? AND raw = ?',
        (db_key, raw),
    ).fetchall()
    out = {'db_key': enc_db(plain_db(db_key), raw)}
    if not raw:
        out['key_desc'] = enc(key)
    if not rows:
        out['row'] = None
        return out
    ((rowid, mode, filename, size, value, vtype, expire_time, tag),) = rows
    if filename is not None:
        with open(os.path.join(cache.directory, filename), 'rb') as f:
            blob = f.read()
    elif isinstance(value, str):
        blob = value.encode('utf-8')
    elif isinstance(value, bytes):
        blob = value
    else:
        blob = None
    out['row'] = {
        'rowid': rowid,
        'mode': mode,
        'filename': filename,
        'size': size,
        'value_type': vtype,
        'blob': None if blob is None else b64(blob),
        'expire_time': bits(expire_time),
        'tag': enc_opt(tag),
    }
    return out


MISSING = object()


def item_of(cache, con, key):
    """get(key, expire_time=True, tag=True) plus the stored row."""
    value, expire_time, tag = cache.get(
        key, default=MISSING, expire_time=True, tag=True
    )
    out = row_of(cache, con, key)
    out['value'] = {'t': 'missing'} if value is MISSING else enc(value)
    out['expire_time'] = bits(expire_time)
    out['tag'] = enc_opt(tag)
    return out


def state_of(cache, con):
    """Everything about a cache that does not depend on chosen keys."""
    settings = dict(con.execute('SELECT key, value FROM Settings').fetchall())
    rows = []
    for (rowid, key, raw, expire_time, tag, size, mode, filename, vtype) in (
        con.execute(
            'SELECT rowid, key, raw, expire_time, tag, size, mode, filename,'
            ' typeof(value) FROM Cache ORDER BY rowid'
        ).fetchall()
    ):
        rows.append(
            {
                'rowid': rowid,
                'key': enc_db(key, raw),
                'raw': raw,
                'expire_time': bits(expire_time),
                'tag': enc_opt(tag),
                'size': size,
                'mode': mode,
                'filename': filename,
                'value_type': vtype,
            }
        )
    ((count_rows, sum_size),) = con.execute(
        'SELECT COUNT(key), COALESCE(SUM(size), 0) FROM Cache'
    ).fetchall()
    triggers = dict(
        con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).fetchall()
    )
    indexes = sorted(
        name
        for (name,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'Cache' AND sql IS NOT NULL"
        ).fetchall()
    )
    return {
        'settings': settings,
        'rows': rows,
        'count_rows': count_rows,
        'sum_size': sum_size,
        'len': len(cache),
        'iter': [enc(k) for k in cache],
        'reversed': [enc(k) for k in reversed(cache)],
        'sorted': [enc(k) for k in cache.iterkeys()],
        'sorted_reverse': [enc(k) for k in cache.iterkeys(reverse=True)],
        'triggers': triggers,
        'indexes': indexes,
        'volume': cache.volume(),
    }


def check(cache):
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        return [str(w.message) for w in cache.check()]


def cmd_pickles(req):
    out = {}
    for name, expr in req['exprs'].items():
        obj = eval(expr, EVAL_GLOBALS, {})  # test inputs only
        plain = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out[name] = {
            'key_b64': b64(pickletools.optimize(plain)),
            'value_b64': b64(plain),
            'desc': enc(obj),
        }
    return out


def cmd_hash(req):
    disk = diskcache.Disk(
        '/nonexistent', pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    out = []
    for e in req['keys']:
        key = dec(e)
        db_key, raw = disk.put(key)
        out.append(
            {
                'hash': disk.hash(key),
                'raw': bool(raw),
                'db': enc_db(plain_db(db_key), raw),
            }
        )
    return out


def side_of(op, default):
    return op.get('side') or default


def run_op(cache, con, op):
    name = op['op']
    if name in ('set', 'add'):
        key = dec(op['key'])
        value = dec(op['value'])
        read = bool(op.get('read'))
        if read:
            value = io.BytesIO(value)
        fn = cache.set if name == 'set' else cache.add
        ok = fn(
            key, value, expire=op.get('expire'), read=read,
            tag=dec(op.get('tag')),
        )
        res = item_of(cache, con, key)
        res['ok'] = ok
        return res
    if name == 'get':
        return item_of(cache, con, dec(op['key']))
    if name == 'delete':
        return {'ok': cache.delete(dec(op['key']))}
    if name == 'touch':
        return {'ok': cache.touch(dec(op['key']), op.get('expire'))}
    if name == 'incr':
        value = cache.incr(
            dec(op['key']), dec(op['delta']), dec(op.get('default'))
        )
        return {'value': enc(value)}
    if name == 'push':
        value = dec(op['value'])
        read = bool(op.get('read'))
        if read:
            value = io.BytesIO(value)
        key = cache.push(
            value, prefix=op.get('prefix'), side=side_of(op, 'back'),
            expire=op.get('expire'), read=read, tag=dec(op.get('tag')),
        )
        res = item_of(cache, con, key)
        res['key'] = enc(key)
        return res
    if name in ('pull', 'peek'):
        fn = cache.pull if name == 'pull' else cache.peek
        (key, value), expire_time, tag = fn(
            prefix=op.get('prefix'), side=side_of(op, 'front'),
            expire_time=True, tag=True,
        )
        return {
            'key': enc_opt(key),
            'value': enc_opt(value),
            'expire_time': bits(expire_time),
            'tag': enc_opt(tag),
        }
    if name == 'peekitem':
        (key, value), expire_time, tag = cache.peekitem(
            last=op.get('last', True), expire_time=True, tag=True
        )
        return {
            'key': enc(key),
            'value': enc(value),
            'expire_time': bits(expire_time),
            'tag': enc_opt(tag),
        }
    raise ValueError('unknown op %r' % (name,))


def cmd_write(req):
    settings = req.get('settings') or {}
    with diskcache.Cache(req['dir'], **settings) as cache:
        con = connect(req['dir'])
        results = [run_op(cache, con, op) for op in req['ops']]
        state = state_of(cache, con)
        state['check'] = check(cache)
        con.close()
    return {'results': results, 'state': state}


def cmd_read(req):
    with diskcache.Cache(req['dir']) as cache:
        con = connect(req['dir'])
        # The state first: the reads below count hits under statistics.
        state = state_of(cache, con)
        items = [item_of(cache, con, dec(k)) for k in req.get('keys', [])]
        streams = []
        for k in req.get('stream', []):
            handle = cache.get(dec(k), default=MISSING, read=True)
            if handle is MISSING:
                streams.append(None)
            elif isinstance(handle, io.IOBase):
                with handle:
                    streams.append({'file': True, 'b64': b64(handle.read())})
            else:
                streams.append({'file': False, 'value': enc(handle)})
        state['check'] = check(cache)
        con.close()
    return {'state': state, 'items': items, 'streams': streams}


COMMANDS = {
    'pickles': cmd_pickles,
    'hash': cmd_hash,
    'write': cmd_write,
    'read': cmd_read,
}


def main():
    req = json.load(sys.stdin)
    out = COMMANDS[sys.argv[1]](req)
    json.dump(out, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
