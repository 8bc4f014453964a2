"""Test fixtures: a real cacheserver process and Django settings.

The Go cacheserver is built once per session (or taken from
$CACHESERVER_BIN) and started on a free loopback port with a bearer token.
Django is configured with the backend under test as the default cache.
"""

import json
import os
import queue
import socket
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TOKEN = 'test-token-5c1e0d'


class CacheServer:
    """A cacheserver process serving ``data_dir``."""

    def __init__(self, binary, data_dir, token_file, *args):
        self.binary = binary
        self.data_dir = str(data_dir)
        self.token_file = str(token_file)
        self.args = list(args)
        self.proc = None
        self.addr = None
        self.log = []

    @property
    def url(self):
        return 'http://%s' % self.addr

    def start(self):
        cmd = [self.binary, '--data-dir', self.data_dir, '--listen', '127.0.0.1:0',
               '--token-file', self.token_file] + self.args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        lines = queue.Queue()

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                lines.put(line)
            lines.put(None)

        self.drainer = threading.Thread(target=drain, daemon=True)
        self.drainer.start()
        while True:
            line = lines.get(timeout=60)
            if line is None:
                raise RuntimeError('cacheserver exited before serving:\n' + ''.join(self.log))
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get('msg') == 'serving':
                self.addr = doc['addr']
                return self

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.drainer.join(timeout=10)
        self.proc.stderr.close()
        self.proc = None


def pytest_report_header(config):
    import django
    return 'django %s (%s)' % (django.get_version(), os.path.dirname(django.__file__))


def pytest_configure(config):
    # hack/test-python.sh runs the suite once per Django series: make sure
    # the series asked for is the one imported.
    want = os.environ.get('DISKCACHE_DJANGO_SERIES')
    if want:
        import django
        got = '%d.%d' % django.VERSION[:2]
        if got != want:
            raise pytest.UsageError('DISKCACHE_DJANGO_SERIES=%s but Django %s is imported from %s'
                                    % (want, django.get_version(), django.__file__))


@pytest.fixture(scope='session')
def cacheserver_bin(tmp_path_factory):
    binary = os.environ.get('CACHESERVER_BIN')
    if binary:
        return binary
    out = tmp_path_factory.mktemp('bin') / 'cacheserver'
    subprocess.run(['go', 'build', '-o', str(out), './cmd/cacheserver'], cwd=str(REPO),
                   check=True)
    return str(out)


@pytest.fixture(scope='session')
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('secret') / 'token'
    path.write_text(TOKEN + '\n')
    return str(path)


@pytest.fixture(scope='session')
def server(cacheserver_bin, token_file, tmp_path_factory):
    srv = CacheServer(cacheserver_bin, tmp_path_factory.mktemp('data'), token_file,
                      '--fanout', '8').start()
    yield srv
    srv.stop()


@pytest.fixture
def start_server(cacheserver_bin, token_file, tmp_path):
    """Start extra servers: start_server(data_dir=None, *args)."""
    started = []

    def start(data_dir=None, *args):
        if data_dir is None:
            data_dir = tmp_path / ('data%d' % len(started))
        srv = CacheServer(cacheserver_bin, data_dir, token_file, *args).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope='session')
def pydiskcache_dir(tmp_path_factory):
    """Directory of the python-diskcache DjangoCache alias 'pydiskcache'."""
    return str(tmp_path_factory.mktemp('pydiskcache'))


def custom_key_func(key, key_prefix, version):
    """A customized cache key function (as in Django's cache tests)."""
    return 'CUSTOM-' + '-'.join([key_prefix, str(version), key])


def db_key_func(key, key_prefix, version):
    """A key function that reads the database (allowed in sync code only,
    as Django forbids queries on an event loop)."""
    from django.contrib.auth.models import Group
    return '%s:%s:%s:%s' % (key_prefix, version, Group.objects.exists() in (True, False), key)


@pytest.fixture(scope='session', autouse=True)
def django_settings(server, token_file, pydiskcache_dir, tmp_path_factory):
    import django
    from django.conf import settings

    def backend(**extra):
        conf = {
            'BACKEND': 'diskcache_client.djangocache.DjangoCache',
            'LOCATION': server.url,
            'OPTIONS': {'TOKEN_FILE': token_file, 'SOCKET_TIMEOUT': 10.0, 'RETRIES': 2},
        }
        conf.update(extra)
        return conf

    settings.configure(
        DEBUG=False,
        SECRET_KEY='diskcache-client-tests',
        ALLOWED_HOSTS=['testserver'],
        USE_TZ=True,
        INSTALLED_APPS=['django.contrib.contenttypes', 'django.contrib.auth',
                        'django.contrib.sessions'],
        # A real SQLite database (its tables made by the `database` fixture)
        # for the tests that cache querysets and models.
        DATABASES={'default': {
            'ENGINE': 'django.db.backends.sqlite3',
            'NAME': str(tmp_path_factory.mktemp('db') / 'db.sqlite3'),
        }},
        MIDDLEWARE=[],
        SESSION_ENGINE='django.contrib.sessions.backends.cache',
        CACHES={
            'default': backend(),
            'prefix': backend(KEY_PREFIX='cacheprefix'),
            'v2': backend(VERSION=2),
            'custom_key': backend(KEY_FUNCTION=custom_key_func),
            'custom_key2': backend(KEY_FUNCTION='conftest.custom_key_func'),
            'db_key': backend(KEY_FUNCTION='conftest.db_key_func'),
            # Django's own backend, as the reference for the async tests.
            'locmem': {'BACKEND': 'django.core.cache.backends.locmem.LocMemCache'},
            'forever': backend(TIMEOUT=None),
            'pydiskcache': {
                'BACKEND': 'diskcache.DjangoCache',
                'LOCATION': pydiskcache_dir,
            },
        },
    )
    django.setup()
    yield settings


@pytest.fixture(scope='session')
def database(django_settings):
    """The SQLite database with the tables of the installed apps."""
    from django.core.management import call_command
    call_command('migrate', run_syncdb=True, verbosity=0)


@pytest.fixture
def cache():
    """The default cache, emptied before the test."""
    from django.core.cache import caches
    c = caches['default']
    c.clear()
    return c


@pytest.fixture
def dead_url():
    """The URL of a loopback port nothing listens on."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return 'http://127.0.0.1:%d' % port
