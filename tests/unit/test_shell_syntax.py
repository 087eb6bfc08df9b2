"""The shell's line syntax, path resolution and completion context: pure functions, no node."""

from __future__ import annotations

from pathlib import Path

import pytest

from g8os.client.cli import Options
from g8os.client.shell import Shell, _words_at, history_path, split_commands
from g8os.messages.errors import InvalidArgument


@pytest.mark.parametrize(("line", "commands"), [
    ("ls", [["ls"]]),
    ("  tree   /jobs  ", [["tree", "/jobs"]]),
    ("cd /jobs; ls\npwd", [["cd", "/jobs"], ["ls"], ["pwd"]]),
    ("ls;;\n\n;pwd;", [["ls"], ["pwd"]]),
    ("system sh -c 'echo a; echo b'", [["system", "sh", "-c", "echo a; echo b"]]),
    ('system echo "x;y" \'$HOME\' "a\\"b" "\\n"', [["system", "echo", "x;y", "$HOME", 'a"b', "\\n"]]),
    ("system echo a\\ b \\; c", [["system", "echo", "a b", ";", "c"]]),
    ("system echo ''", [["system", "echo", ""]]),
    ("system echo a#b # a comment; not a command\nls", [["system", "echo", "a#b"], ["ls"]]),
    ("# only a comment", []),
    ("system echo one \\\ntwo", [["system", "echo", "one", "two"]]),
])
def test_split_commands(line: str, commands: list[list[str]]) -> None:
    assert split_commands(line) == commands


@pytest.mark.parametrize("line", ["cd 'jobs", 'system echo "a', "ls 'a\"b"])
def test_unterminated_quote(line: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_commands(line)


@pytest.mark.parametrize(("text", "words", "current"), [
    ("", [], ""),
    ("ins", [], "ins"),
    ("inspect ", ["inspect"], ""),
    ("inspect ../se", ["inspect"], "../se"),
    ("kill --signal HU", ["kill", "--signal"], "HU"),
    ("ls; cd /ga", ["cd"], "/ga"),
    ("ls;", [], ""),
    ("system sh -c 'echo", ["system", "sh", "-c"], "echo"),  # a quote not closed yet
])
def test_words_at_the_cursor(text: str, words: list[str], current: str) -> None:
    assert _words_at(text) == (words, current)


@pytest.fixture
def shell() -> Shell:
    # Nothing is sent: a client connects on its first command only.
    options = Options(connect=None, socket=None, sandbox=None, host="127.0.0.1", port=1, password="",
                      timeout=1.0, timeout_given=False, as_json=False, quiet=False, sources={})
    return Shell(options)


@pytest.mark.parametrize(("cwd", "path", "resolved"), [
    ("/", None, "/"),
    ("/jobs", None, "/jobs"),
    ("/", "jobs", "/jobs"),
    ("/services", "redis", "/services/redis"),
    ("/services/redis", "..", "/services"),
    ("/services/redis", "../..", "/"),
    ("/", "../../..", "/"),
    ("/jobs", "../gateway", "/gateway"),
    ("/jobs", "/log/", "/log"),
    ("/jobs", ".//x/./y", "/jobs/x/y"),
    ("/jobs", ".", "/jobs"),
])
def test_resolve(shell: Shell, cwd: str, path: str | None, resolved: str) -> None:
    shell.cwd = cwd
    assert shell.resolve(path) == resolved


def test_job_id(shell: Shell) -> None:
    assert shell.job_id("web") == "web"
    assert shell.job_id("/jobs/web") == "web"
    shell.cwd = "/jobs"
    assert shell.job_id("./web") == "web"
    shell.cwd = "/jobs/web"
    assert shell.job_id(None) == "web" and shell.job_id(".") == "web"
    shell.cwd = "/"
    with pytest.raises(InvalidArgument, match="which job"):
        shell.job_id(None)
    with pytest.raises(InvalidArgument, match="/log is not a job"):
        shell.job_id("/log")


def test_history_path(tmp_path: Path) -> None:
    assert history_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "g8os" / "shell_history"
    assert history_path({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "g8os" / "shell_history"
