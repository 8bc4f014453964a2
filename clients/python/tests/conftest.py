"""Test fixtures: a real cacheserver process and Django settings.

The Go cacheserver is built once per session (or taken from
$CACHESERVER_BIN) and started on a free loopback port with a bearer token.
Django is configured with the backend under test as the default cache.

The modules in SHARDED_MODULES run twice: against one server, and against
three cacheservers serving one cache as the shards of one topology, reached
through shard 0's URL (as an application reaches a DiskCache through its
Service).
"""

import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TOKEN = 'test-token-5c1e0d'
ADMIN_TOKEN = 'test-admin-token-9f2a47'

# Test modules that run against one server and against three shards.
SHARDED_MODULES = frozenset([
    'test_async', 'test_async_offload', 'test_diskcache_api', 'test_django_api',
    'test_django_integration', 'test_lock', 'test_persistent', 'test_recipes',
])


class CacheServer:
    """A cacheserver process serving ``data_dir``."""

    def __init__(self, binary, data_dir, token_file, *args, listen='127.0.0.1:0'):
        self.binary = binary
        self.data_dir = str(data_dir)
        self.token_file = str(token_file)
        self.args = list(args)
        self.listen = listen
        self.proc = None
        self.addr = None
        self.log = []

    @property
    def url(self):
        return 'http://%s' % self.addr

    def start(self):
        cmd = [self.binary, '--data-dir', self.data_dir, '--listen', self.listen,
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


class Cluster:
    """Cacheservers serving one cache as the shards of one topology (epoch
    1): each started with ``--shard-index``, ``--peers`` and the operator's
    ``--admin-token-file``, on loopback ports reserved up front so that every
    shard knows every URL from the start. ``url`` is shard 0's, the way in
    for clients (as a Kubernetes Service would be)."""

    def __init__(self, binary, data_root, token_file, admin_token_file, shards, *args):
        ports = _free_ports(shards)
        self.urls = ['http://127.0.0.1:%d' % port for port in ports]
        self.shards = [
            CacheServer(binary, Path(data_root) / ('shard%d' % i), token_file,
                        '--shard-index', str(i), '--peers', ','.join(self.urls),
                        '--admin-token-file', str(admin_token_file), *args,
                        listen='127.0.0.1:%d' % port)
            for i, port in enumerate(ports)
        ]

    @property
    def url(self):
        return self.urls[0]

    def start(self):
        try:
            for shard in self.shards:
                shard.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for shard in self.shards:
            shard.stop()


def _free_ports(n):
    """n loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(('127.0.0.1', 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope='session')
def admin_token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('admin') / 'token'
    path.write_text(ADMIN_TOKEN + '\n')
    return str(path)


def pytest_generate_tests(metafunc):
    # One server for every module; three shards too for SHARDED_MODULES.
    if 'server' in metafunc.fixturenames:
        module = metafunc.module.__name__.rpartition('.')[2]
        counts = [1, 3] if module in SHARDED_MODULES else [1]
        metafunc.parametrize('server', counts, indirect=True, scope='session',
                             ids=['%dshard' % n for n in counts])


@pytest.fixture(scope='session')
def server(request, cacheserver_bin, token_file, admin_token_file, tmp_path_factory):
    """The server the default Django cache talks to: one cacheserver, or
    (param 3) a Cluster of three reached through shard 0's URL."""
    shards = getattr(request, 'param', 1)
    if shards == 1:
        srv = CacheServer(cacheserver_bin, tmp_path_factory.mktemp('data'), token_file,
                          '--fanout', '8').start()
    else:
        srv = Cluster(cacheserver_bin, tmp_path_factory.mktemp('shards'), token_file,
                      admin_token_file, shards, '--fanout', '8').start()
    yield srv
    srv.stop()


@pytest.fixture
def start_cluster(cacheserver_bin, token_file, admin_token_file, tmp_path):
    """Start clusters: start_cluster(shards, *args)."""
    started = []

    def start(shards, *args):
        cluster = Cluster(cacheserver_bin, tmp_path / ('cluster%d' % len(started)), token_file,
                          admin_token_file, shards, *args).start()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


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

    caches = {
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
    }
    if settings.configured:
        # Another server of the parametrized `server` fixture: point the
        # caches at it, as Django's override_settings would.
        from django.test.signals import setting_changed
        settings.CACHES = caches
        setting_changed.send(sender=type(settings), setting='CACHES', value=caches, enter=True)
        yield settings
        return
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
        CACHES=caches,
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


def accepts_token(url, token):
    """Whether the server at url takes token (a request with it is not
    answered 401)."""
    req = urllib.request.Request(url + '/v1/info', headers={'Authorization': 'Bearer ' + token})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return True
    except urllib.error.HTTPError as e:
        assert e.code == 401
        return False


def hold_the_only_connection(srv):
    """A socket holding the one connection a server started with
    --max-connections 1 allows, once its last client has closed theirs."""
    host, _, port = srv.addr.rpartition(':')
    for _ in range(500):  # until the server has seen the client's close
        hold = socket.create_connection((host, int(port)))
        hold.sendall(b'GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n')
        if hold.recv(1024).startswith(b'HTTP/1.1 200'):
            return hold
        hold.close()
        time.sleep(0.01)  # a poll's pace
    pytest.fail('the server never gave the connection back')
