"""Structured logs: logfmt lines on stderr, quiet by default."""

from __future__ import annotations

import logging

import pytest

from slate import logs


def test_quiet_by_default_and_logfmt(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure()
    log = logging.getLogger("slate.test")
    log.info("%s", logs.kv("pushed", view="frontend@us-west", streams=3))
    assert capsys.readouterr().err == ""
    log.warning("%s", logs.kv("nack", message='bad "weight" here'))
    line = capsys.readouterr().err.strip()
    assert line.startswith("ts=") and " level=warning logger=slate.test " in line
    assert line.endswith('event=nack message="bad \\"weight\\" here"')


def test_verbosity_and_plain_messages(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(2)
    logging.getLogger("slate.test").debug("solved in %d rounds", 2)
    assert capsys.readouterr().err.strip().endswith('msg="solved in 2 rounds"')
    logs.configure("error")
    logging.getLogger("slate.test").warning("hidden")
    assert capsys.readouterr().err == ""
    assert len([h for h in logging.getLogger("slate").handlers if getattr(h, "_slate", False)]) == 1
