"""The package's module graph: one job per module, no import cycles."""

import ast
from pathlib import Path

import diskcache_client

PACKAGE = Path(diskcache_client.__file__).parent


def _imports(path):
    """The package modules that ``path`` imports, at top level or inside
    functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split('.')[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
                'diskcache_client.'):
            found.add(node.module.split('.')[1])
    return found


def test_no_import_cycles():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob('*.py') if p.stem != '__init__'}
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError('import cycle: ' + ' -> '.join(cycle))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_transport_is_split():
    # Framing, pools, breaker and routing each have their module; transport
    # keeps the client that ties them together.
    graph = {p.stem: _imports(p) for p in PACKAGE.glob('*.py')}
    assert {'http11', 'pool', 'breaker', 'routing'} <= graph['transport']
    assert graph['routing'] == set() and graph['breaker'] == set()
    assert graph['http11'] == set()
