"""Fixtures for the operator tests: real kube-apiservers (one per "cluster"), shared per session.

A plugin module (`pytest_plugins = ["kube_fixtures"]` in the tests that use it) rather than a
conftest.py: mypy cannot check two modules both named conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_harness import KubeApi


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """The local cluster: a kube-apiserver 1.20 + etcd, with the TrafficPolicy CRD installed."""
    api = KubeApi.start("east", tmp_path_factory.mktemp("kube-east"))
    try:
        api.install_crd()
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def kube_remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    """A second cluster (its own API server and etcd), reached through a kubeconfig Secret."""
    api = KubeApi.start("west", tmp_path_factory.mktemp("kube-west"))
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def kube_dir(tmp_path: Path) -> Path:
    return tmp_path
