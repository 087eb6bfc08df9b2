"""The boot configuration (system/bootconfig.py): TOML files of startup services and extensions,
parsed strictly; every problem an error naming its file and key; dependency order."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from g8os.actors.services import _public
from g8os.messages import registry
from g8os.messages.config import ConfigGet, Extension, extension_request, template_fields
from g8os.messages.convert import structure
from g8os.messages.core import Bash, System
from g8os.messages.errors import InvalidArgument
from g8os.messages.registry import Kind, Owner
from g8os.system import bootconfig

pytestmark = pytest.mark.timeout(30)


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def load(tmp_path: Path, **files: str) -> bootconfig.BootConfig:
    return bootconfig.load(write(tmp_path, {f"{name}.toml": text for name, text in files.items()}))


def errors(config: bootconfig.BootConfig) -> list[tuple[str, str, str]]:
    return [(e.file, e.key, e.message) for e in config.errors]


def only_error(config: bootconfig.BootConfig) -> tuple[str, str, str]:
    found = errors(config)
    assert len(found) == 1, found
    return found[0]


# ---- what a valid configuration gives --------------------------------------------------------


def test_services_with_defaults_and_each_kind_of_command(tmp_path):
    config = load(tmp_path, main="""
        [startup.prog]
        name = "sleep"
        args = ["100"]

        [startup.sys]
        name = "core.system"
        args = {name = "ls", args = ["-l"], dir = "/", env = {A = "1"}}

        [startup.script]
        name = "bash"
        args = {script = "echo hi", stdin = "x"}
        running_delay = -1
        running_match = "ready"
        protected = true
        max_restart = 3
        recurring_period = 5
        tags = ["a", "b"]
        after = ["prog", "boot"]
        condition = "test -e /x"
    """)
    assert errors(config) == []
    assert [s.id for s in config.startup] == ["prog", "sys", "script"]
    prog, sys_, script = config.startup
    # defaults
    assert (prog.after, prog.condition, prog.running_delay, prog.running_match, prog.protected,
            prog.max_restart, prog.recurring_period, prog.tags) == ((), "", 2.0, "", False, 0, 0, ())
    # a program is core.system of that name
    assert prog.command == "core.system" and isinstance(prog.request, System)
    assert prog.process() == (["sleep", "100"], None, "", "")
    assert sys_.process() == (["ls", "-l"], {"A": "1"}, "/", "")
    assert isinstance(script.request, Bash)
    assert script.process() == (["sh", "-c", "echo hi"], None, "", "x")
    assert (script.running_delay, script.running_match, script.protected, script.max_restart,
            script.recurring_period, script.tags, script.after, script.condition) == \
        (-1.0, "ready", True, 3, 5, ("a", "b"), ("prog", "boot"), "test -e /x")
    job = script.job()
    assert (job.id, job.command, job.tags, job.max_restart, job.recurring_period) == \
        ("script", "bash", ["a", "b"], 3, 5)
    assert job.arguments == {"script": "echo hi", "stdin": "x"}
    assert script.to_dict()["file"] == "main.toml"


def test_topological_order_keeps_definition_order_for_ties(tmp_path):
    config = load(tmp_path, a="""
        [startup.web]
        name = "true"
        after = ["db", "prepare"]
        [startup.db]
        name = "true"
        after = ["prepare"]
        [startup.metrics]
        name = "true"
    """, b="""
        [startup.prepare]
        name = "true"
        [startup.last]
        name = "true"
        after = ["web", "net", "init"]
    """)
    assert errors(config) == []
    order = [s.id for s in config.startup]
    assert order == ["metrics", "prepare", "db", "web", "last"]
    for service in config.startup:  # every dependency comes first
        for dependency in service.after:
            if dependency not in bootconfig.PSEUDO_DEPENDENCIES:
                assert order.index(dependency) < order.index(service.id)
    assert config.files == ("a.toml", "b.toml")


def test_empty_and_missing_directories(tmp_path):
    assert bootconfig.load("") == bootconfig.BootConfig()
    assert bootconfig.load(None) == bootconfig.BootConfig()
    missing = bootconfig.load(tmp_path / "nope")
    assert [(e.key, e.message) for e in missing.errors] == [("", "not a directory")]
    (tmp_path / "notes.txt").write_text("[startup.x]\nname = 1\n")  # only *.toml is read
    assert bootconfig.load(tmp_path).errors == ()


# ---- errors name the file and the key ---------------------------------------------------------


@pytest.mark.parametrize("body, key, message", [
    ('name = "true"\nmax_restart = "x"', "startup.svc.max_restart", "expected integer, got string"),
    ('name = "true"\nmax_restart = -1', "startup.svc.max_restart", "must not be negative"),
    ('name = "true"\nprotected = "yes"', "startup.svc.protected", "expected boolean"),
    ('name = "true"\nrunning_delay = "2s"', "startup.svc.running_delay", "expected number"),
    ('name = "true"\nrunning_delay = inf', "startup.svc.running_delay", "finite"),
    ('name = "true"\nafter = "db"', "startup.svc.after", "expected list"),
    ('name = "true"\nafter = ["db", 3]', "startup.svc.after[1]", "expected string"),
    ('name = "true"\ntags = [1]', "startup.svc.tags[0]", "expected string"),
    ('args = ["x"]', "startup.svc.name", "is required"),
    ('name = ""', "startup.svc.name", "must not be empty"),
    ('name = "true"\nrestart = true', "startup.svc.restart", "unknown field"),
    ('name = "true"\nrunning_match = "("', "startup.svc.running_match", "not a regular expression"),
    ('name = "true"\nafter = ["ghost"]', "startup.svc.after", "unknown dependency `ghost`"),
    ('name = "true"\nargs = "-l"', "startup.svc.args", "expected list"),
    ('name = "true"\nargs = ["-l", 2]', "startup.svc.args[1]", "expected string"),
    ('name = "info.cpu"', "startup.svc.name", "not a process command"),
    ('name = "core.system"\nargs = {args = ["x"]}', "startup.svc.args.name", "is required"),
    ('name = "core.system"\nargs = ["ls"]', "startup.svc.args", "expected a table"),
    ('name = "bash"\nargs = {script = 1}', "startup.svc.args.script", "expected string"),
])
def test_a_bad_field_is_an_error_naming_file_and_key(tmp_path, body, key, message):
    config = load(tmp_path, other='[startup.fine]\nname = "true"\n',
                  services="[startup.svc]\n" + body + "\n")
    file, where, text = only_error(config)
    assert (file, where) == ("services.toml", key)
    assert message in text
    assert [s.id for s in config.startup] == ["fine"]  # the rest of the configuration is used
    assert str(config.errors[0]).startswith(f"services.toml: {key}: ")


@pytest.mark.parametrize("table, key, message", [
    ('[startup.redis]\nname = "true"', "startup.redis", "reserved"),
    ('[startup.net]\nname = "true"', "startup.net", "reserved"),
    ('[startup."a/b"]\nname = "true"', 'startup."a/b"', "service id"),
    ('[startup.".."]\nname = "true"', 'startup.".."', "service id"),
    ('[startup]\nx = 1', "startup.x", "expected a table"),
    ('startup = 1', "startup", "expected a table"),
    ('[main]\nmax_jobs = 10', "main", "unknown section"),
])
def test_bad_sections(tmp_path, table, key, message):
    file, where, text = only_error(load(tmp_path, conf=table + "\n"))
    assert (file, where) == ("conf.toml", key)
    assert message in text


def test_a_file_that_is_not_toml_is_left_out_whole(tmp_path):
    config = load(tmp_path, good='[startup.ok]\nname = "true"\n',
                  broken='[startup.half]\nname = "true" "false"\n')
    file, where, text = only_error(config)
    assert (file, where) == ("broken.toml", "")
    assert "not valid TOML" in text and "line 2" in text
    assert [s.id for s in config.startup] == ["ok"]


def test_a_service_defined_twice(tmp_path):
    config = load(tmp_path, a='[startup.web]\nname = "true"\n', b='[startup.web]\nname = "false"\n')
    assert only_error(config) == ("b.toml", "startup.web", "defined again (first in a.toml)")
    assert config.service("web").name == "true"


# ---- dependencies --------------------------------------------------------------------------


def test_cycles_are_errors_of_each_member_and_their_dependants_stay(tmp_path):
    config = load(tmp_path, graph="""
        [startup.a]
        name = "true"
        after = ["c"]
        [startup.b]
        name = "true"
        after = ["a"]
        [startup.c]
        name = "true"
        after = ["b"]
        [startup.self]
        name = "true"
        after = ["self"]
        [startup.downstream]
        name = "true"
        after = ["a", "free"]
        [startup.free]
        name = "true"
    """)
    found = {(where, text) for _file, where, text in errors(config)}
    assert found == {
        ("startup.a.after", "dependency cycle: a → c → b → a"),
        ("startup.b.after", "dependency cycle: b → a → c → b"),
        ("startup.c.after", "dependency cycle: c → b → a → c"),
        ("startup.self.after", "dependency cycle: self → self"),
    }
    assert {e.file for e in config.errors} == {"graph.toml"}
    # downstream is valid itself: it is kept (and fails at boot: its dependency `a` is not valid)
    assert [s.id for s in config.startup] == ["free", "downstream"]


def test_a_dependency_on_an_invalid_service_is_not_unknown(tmp_path):
    config = load(tmp_path, conf="""
        [startup.bad]
        name = 1
        [startup.user]
        name = "true"
        after = ["bad"]
    """)
    assert only_error(config)[1] == "startup.bad.name"
    assert [s.id for s in config.startup] == ["user"]


def test_duplicate_dependencies_are_kept_once(tmp_path):
    config = load(tmp_path, conf='[startup.a]\nname = "true"\n'
                                 '[startup.b]\nname = "true"\nafter = ["a", "a"]\n')
    assert config.service("b").after == ("a",)


# ---- extensions ----------------------------------------------------------------------------


def test_extension_parsing_and_rendering(tmp_path):
    config = load(tmp_path, ext="""
        [extension.greet]
        binary = "sh"
        args = ["-c", "echo {greeting}, {who}! {{literal}}", "greet"]
        cwd = "/srv/{who}"
        env = {WHO = "{who}", FIXED = "1"}

        [extension."zerotier.list"]
        binary = "zerotier-cli"
        args = ["listnetworks"]

        [startup.hello]
        name = "greet"
        args = {who = "the world", greeting = "hello"}
    """)
    assert errors(config) == []
    greet, zt = config.extensions
    assert (zt.name, zt.placeholders()) == ("zerotier.list", [])
    assert greet.placeholders() == ["greeting", "who"]
    argv, env, cwd = greet.render({"greeting": "hi", "who": "a b; rm -rf /"})
    # each item stays one argument: values are never split, nor seen by a shell
    assert argv == ["sh", "-c", "echo hi, a b; rm -rf /! {literal}", "greet"]
    assert env == {"WHO": "a b; rm -rf /", "FIXED": "1"} and cwd == "/srv/a b; rm -rf /"
    hello = config.service("hello")
    assert hello.command == "greet"
    assert hello.process() == (["sh", "-c", "echo hello, the world! {literal}", "greet"],
                               {"WHO": "the world", "FIXED": "1"}, "/srv/the world", "")
    assert greet.to_dict()["arguments"] == ["greeting", "who"]


@pytest.mark.parametrize("table, key, message", [
    ('[extension.x]\nargs = ["a"]', "extension.x.binary", "is required"),
    ('[extension.x]\nbinary = "sh"\nargs = ["{a:>3}"]', "extension.x.args[0]", "use {name}"),
    ('[extension.x]\nbinary = "sh"\nargs = ["ok", "{"]', "extension.x.args[1]", "bad template"),
    ('[extension.x]\nbinary = "sh"\ncwd = "{0}"', "extension.x.cwd", "use {name}"),
    ('[extension.x]\nbinary = "sh"\nenv = {A = "{a.b}"}', "extension.x.env.A", "use {name}"),
    ('[extension.x]\nbinary = "sh"\nargs = ["{stdin}"]', "extension.x.args[0]", "reserved"),
    ('[extension.x]\nbinary = "sh"\nenv = {A = 1}', "extension.x.env.A", "expected string"),
    ('[extension.x]\nbinary = "sh"\nuser = "root"', "extension.x.user", "unknown field"),
    ('[extension.bash]\nbinary = "sh"', "extension.bash", "built-in command"),
    ('[extension.Bad]\nbinary = "sh"', "extension.Bad", "lower-case"),
    ('[extension.zerotier.list]\nbinary = "zt"', "extension.zerotier", 'quoted: [extension."zerotier.list"]'),
])
def test_bad_extensions(tmp_path, table, key, message):
    file, where, text = only_error(load(tmp_path, ext=table + "\n"))
    assert (file, where) == ("ext.toml", key)
    assert message in text


def test_a_service_of_an_invalid_extension_is_an_error_too(tmp_path):
    config = load(tmp_path, ext="""
        [extension.tool]
        binary = 3
        [startup.uses]
        name = "tool"
    """)
    assert [(where, text) for _f, where, text in errors(config)] == [
        ("extension.tool.binary", "expected string, got int"),
        ("startup.uses.name", "the extension `tool` is not valid"),
    ]


def test_extension_arguments_are_validated_like_a_builtin_commands(tmp_path):
    config = load(tmp_path, ext='[extension.greet]\nbinary = "echo"\nargs = ["{who}"]\n'
                                '[startup.s]\nname = "greet"\nargs = {whom = "x"}\n')
    assert only_error(config)[1:] == ("startup.s.args.who", "is required")
    request_class = extension_request(config.extensions[0])
    with pytest.raises(InvalidArgument) as bad:
        structure({"who": 3}, request_class, prefix="arguments")
    assert bad.value.field == "arguments.who"
    with pytest.raises(InvalidArgument) as missing:
        structure({}, request_class, prefix="arguments")
    assert missing.value.field == "arguments.who"
    request = structure({"who": "you", "stdin": "in", "extra": 1}, request_class, prefix="arguments")
    assert request.process() == (["echo", "you"], None, "", "in")


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(registry.load())
    try:
        yield
    finally:
        for name in set(registry.load()) - before:
            registry.remove(name)


def test_install_registers_extensions_as_process_commands(tmp_path, clean_registry):
    config = load(tmp_path, ext='[extension."my.tool"]\nbinary = "echo"\nargs = ["{what}"]\n')
    assert registry.lookup("my.tool") is None
    bootconfig.install(config)
    bootconfig.install(config)  # again: harmless
    info = registry.lookup("my.tool")
    assert (info.owner, info.kind) == (Owner.JOBS, Kind.PROCESS)
    assert info.summary == "Run `echo {what}` (extension)."
    parsed = registry.parse_arguments(info, {"what": "x"})
    assert parsed.process()[0] == ["echo", "x"]
    with pytest.raises(ValueError):
        registry.add("bash", info.request, owner=Owner.JOBS, kind=Kind.PROCESS)
    registry.remove("bash")  # built-in commands are never removed
    assert registry.lookup("bash") is not None


def test_template_fields():
    assert template_fields("a {b} {{c}} {d}{b}") == ["b", "d", "b"]
    assert Extension(name="x", binary="y", args=["{a}", "{b}{a}"], env={"E": "{c}"}).placeholders() == \
        ["a", "b", "c"]
    for bad in ("{", "}", "{}", "{0}", "{a!r}", "{a:3}", "{a[0]}"):
        with pytest.raises(ValueError):
            template_fields(bad)


# ---- config.get's request and what it leaves out ---------------------------------------------


def test_config_get_section_is_validated():
    assert structure({}, ConfigGet).section is None
    assert structure({"section": "errors"}, ConfigGet).section == "errors"
    for bad in ({"section": "secrets"}, {"section": 1}):
        with pytest.raises(InvalidArgument) as error:
            structure(bad, ConfigGet, prefix="arguments")
        assert error.value.field == "arguments.section"


def test_secrets_are_left_out():
    settings = {"name": "n", "redis": {"socket": "/s", "password": "hunter2", "port": 1},
                "stores": [{"url": "x", "token": "t", "Secret_Key": "k"}], "credentials": {"a": 1}}
    assert _public(settings) == {"name": "n", "redis": {"socket": "/s", "port": 1}, "stores": [{"url": "x"}]}
