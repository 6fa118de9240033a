"""Subcommands other packages register in the `ccapo.commands` entry-point group (the core imports neither)."""

from __future__ import annotations

import sys

import pytest

from ccapo.cli import main


def test_serve_parses_its_own_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0 and "usage: ccapo serve" in capsys.readouterr().out


def test_train_is_registered_by_the_trainer(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(command in listed for command in ("serve", "train", "eval", "plot"))


def test_a_command_whose_package_is_missing_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ccapo_trainer.cli", None)  # as in the server image, which has no trainer
    assert main(["train", "--config", "run.yaml"]) == 2
    assert "`ccapo train` cannot be loaded here" in capsys.readouterr().err
