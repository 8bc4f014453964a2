"""A value the server cannot keep under its size limit is refused (413), a
value that does not fit on a full volume too (507): Django's set and add
answer False, and nothing is stored."""

import logging
import os
import subprocess

import pytest

from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN


def _refusals(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == 'diskcache_client.djangocache' and r.levelno >= logging.WARNING]


def test_set_too_large_for_size_limit_returns_false(start_server):
    # 800,000 bytes over a fanout of 8: 100,000 bytes per database.
    srv = start_server(None, '--size-limit', '800000')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})
    assert c.set('small', b'x' * 50000) is True
    assert c.get('small') == b'x' * 50000
    assert c.set('big', b'x' * 200000) is False
    assert c.add('big', b'x' * 200000) is False
    assert c.get('big') is None
    assert c.get('small') == b'x' * 50000


@pytest.fixture
def small_volume(tmp_path):
    """A 16 MiB tmpfs (needs root to mount; skipped otherwise)."""
    vol = tmp_path / 'vol'
    vol.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(vol)],
            capture_output=True).returncode != 0:
        pytest.skip('cannot mount a small tmpfs (needs root)')
    yield vol
    subprocess.run(['umount', str(vol)], check=True)


def test_set_on_full_disk_returns_false(small_volume, start_server):
    """A full volume answers 507: set and add answer False, like 413."""
    srv = start_server(small_volume / 'data', '--fanout', '2', '--disk-reserve-bytes', '1048576')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})
    stored = 0
    for i in range(200):
        if c.set('fill%d' % i, b'x' * 200000) is False:
            break
        stored += 1
    else:
        pytest.fail('16 MiB volume never filled up')
    assert stored > 0
    assert c.get('fill%d' % stored) is None
    assert c.add('another', b'y' * 200000) is False
    # Deletes still work on a full disk; what was stored is still there.
    assert c.get('fill0') == b'x' * 200000
    assert c.delete('fill0') is True


def test_refused_writes_are_logged_once(small_volume, start_server, caplog):
    """A full shard refuses every write: each set answers False, and the log
    gets one line, without the key, for 330 of them (it got one each)."""
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    srv = start_server(small_volume / 'data', '--fanout', '2', '--disk-reserve-bytes', '1048576')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})
    i = 0
    while c.set('fill%d' % i, b'x' * 200000) is not False:
        i += 1
        assert i < 200, '16 MiB volume never filled up'
    for j in range(330):
        assert c.set('s%d' % j, b'y' * 200000) is False
    records = _refusals(caplog)
    assert len(records) == 1, records
    assert records[0].startswith('cache set: value refused: %s (507 insufficient_storage' % srv.url)
    for message in records:
        assert '/v1/keys' not in message and ':1:' not in message


def test_too_large_values_are_logged_once(start_server, caplog):
    caplog.set_level(logging.WARNING, logger='diskcache_client')
    srv = start_server(None, '--size-limit', '800000')
    c = DjangoCache(srv.url, {'OPTIONS': {'TOKEN': TOKEN}})
    for i in range(50):
        assert c.set('big%d' % i, b'x' * 200000) is False
        assert c.add('big%d' % i, b'x' * 200000) is False
    records = _refusals(caplog)
    assert len(records) == 2, records  # one for set, one for add
    assert all(' (413 value_too_large' in m and 'big' not in m for m in records), records
