"""Tests of bench.py's own logic: run by hack/test-python.sh with pytest."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize('text,want', [
    ('1', {1}), ('2-3', {2, 3}), ('0,2', {0, 2}), (' 0 , 3-4', {0, 3, 4}), ('1-1', {1}),
])
def test_parse_cpus(text, want):
    assert bench.parse_cpus(text) == want


@pytest.mark.parametrize('text', ['', 'x', '1-', '-1', '3-2', '1,,2', '1.5'])
def test_parse_cpus_refuses_what_is_not_a_list(text):
    with pytest.raises(ValueError, match='not a CPU list'):
        bench.parse_cpus(text)


def test_split_cpus():
    assert bench.split_cpus('1', {0, 1}) == ([1], [0])
    assert bench.split_cpus('2-3', {0, 1, 2, 3}) == ([2, 3], [0, 1])
    with pytest.raises(ValueError, match='may only run on CPUs 0,1'):
        bench.split_cpus('2', {0, 1})
    with pytest.raises(ValueError, match='leaves no CPU for the worker processes'):
        bench.split_cpus('0-1', {0, 1})


def test_services_start_servers_on_their_cpus():
    cpu = max(os.sched_getaffinity(0))
    services = bench.Services({cpu})
    proc = services.start('probe', ['/bin/sh', '-c', 'grep Cpus_allowed_list /proc/self/status'],
                          stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert out.split(':')[1].strip() == str(cpu)
