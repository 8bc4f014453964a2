"""The backend under Django's own cache users: sessions and cache_page."""

import time

from django.contrib.sessions.backends.cache import SessionStore
from django.http import HttpResponse
from django.test import RequestFactory
from django.views.decorators.cache import cache_page


def test_session_backend(cache):
    session = SessionStore()
    session['user'] = 'alice'
    session['cart'] = [1, 2, 3]
    session.save()
    key = session.session_key
    assert key

    loaded = SessionStore(session_key=key)
    assert loaded['user'] == 'alice'
    assert loaded['cart'] == [1, 2, 3]
    assert loaded.exists(key)

    loaded['user'] = 'bob'
    loaded.save()
    assert SessionStore(session_key=key)['user'] == 'bob'

    loaded.set_expiry(1000)
    loaded.save()
    data, expire_time = cache.get(SessionStore.cache_key_prefix + key, expire_time=True)
    assert data['user'] == 'bob'
    assert 990 < expire_time - time.time() <= 1000.5

    old_key = loaded.session_key
    loaded.cycle_key()
    assert loaded.session_key != old_key
    assert not SessionStore().exists(old_key)
    assert SessionStore(session_key=loaded.session_key)['user'] == 'bob'

    loaded.delete()
    assert not SessionStore().exists(loaded.session_key or old_key)
    assert SessionStore(session_key=key).load() == {}


def test_session_flush_and_unknown_key(cache):
    session = SessionStore()
    session['x'] = 1
    session.save()
    key = session.session_key
    session.flush()
    assert not SessionStore().exists(key)
    # An unknown session key loads empty and gets a new key on save.
    unknown = SessionStore(session_key='a' * 32)
    assert unknown.load() == {}
    unknown['y'] = 2
    unknown.save()
    assert unknown.session_key != 'a' * 32


def test_cache_page(cache):
    calls = []

    @cache_page(60)
    def view(request):
        calls.append(request.path)
        return HttpResponse('rendered %d' % len(calls))

    factory = RequestFactory()
    first = view(factory.get('/page/'))
    second = view(factory.get('/page/'))
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == b'rendered 1'
    assert calls == ['/page/']
    # Another URL is another cache entry.
    other = view(factory.get('/other/'))
    assert other.content == b'rendered 2'
    # HEAD is served from the cached GET too; POST never is.
    assert view(factory.head('/page/')).status_code == 200
    assert len(calls) == 2
    view(factory.post('/page/'))
    assert len(calls) == 3
    # Clearing the cache re-renders.
    cache.clear()
    assert view(factory.get('/page/')).content == b'rendered 4'


def test_cache_page_with_prefix_and_timeout(cache):
    calls = []

    @cache_page(30, key_prefix='site2')
    def view(request):
        calls.append(1)
        response = HttpResponse('v')
        return response

    factory = RequestFactory()
    response = view(factory.get('/x/'))
    assert 'max-age=30' in response['Cache-Control']
    view(factory.get('/x/'))
    assert len(calls) == 1
