"""A value the server cannot keep under its size limit is refused (413):
Django's set and add answer False, and nothing is stored."""

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
