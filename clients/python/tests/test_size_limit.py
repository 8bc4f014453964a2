"""A value the server cannot keep under its size limit is refused (413), a
value that does not fit on a full volume too (507): Django's set and add
answer False, and nothing is stored."""

import os
import subprocess

import pytest

from diskcache_client.djangocache import DjangoCache

from conftest import TOKEN


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
