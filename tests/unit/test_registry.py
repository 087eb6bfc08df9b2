"""Every command is whole: a request class, a handler on its owner, a client method, a docs page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from g8os.actors.disks import DiskSupervisor
from g8os.actors.files import FilesActor
from g8os.actors.gateway import GatewayActor
from g8os.actors.jobs import JobSupervisor
from g8os.actors.log import LogActor
from g8os.actors.root import RootActor
from g8os.actors.services import ServiceSupervisor
from g8os.actors.stats import StatsActor
from g8os.client import Client
from g8os.messages import registry
from g8os.messages.registry import Kind, Owner

pytestmark = pytest.mark.timeout(30)

DOCS = Path(__file__).resolve().parents[2] / "docs"
OWNERS = {Owner.JOBS: JobSupervisor, Owner.STATS: StatsActor, Owner.ROOT: RootActor, Owner.FILES: FilesActor,
          Owner.GATEWAY: GatewayActor}
OWNERS[Owner.SERVICES] = ServiceSupervisor
OWNERS[Owner.DISKS] = DiskSupervisor
OWNERS[Owner.LOG] = LogActor
# client call for each command: namespace attribute path on Client
CLIENT = {
    "core.ping": "ping", "core.system": "system", "bash": "bash", "core.subscribe": "subscribe",
}

COMMANDS = sorted(registry.load())


def test_names_are_domain_verb():
    for name in COMMANDS:
        assert re.fullmatch(r"[a-z]+(\.[a-z_]+)?", name), name


@pytest.mark.parametrize("name", COMMANDS)
def test_request_class_is_documented_and_validated(name):
    info = registry.lookup(name)
    assert info.request.__doc__ and info.summary
    assert info.request.command_name == name


@pytest.mark.parametrize("name", COMMANDS)
def test_owner_handles_it(name):
    info = registry.lookup(name)
    owner = OWNERS[info.owner]
    if info.owner == Owner.GATEWAY:
        return  # answered at the edge (core.ping)
    if info.kind == Kind.PROCESS:
        assert hasattr(owner, "_submit")  # process jobs come through the job queue
        return
    assert hasattr(owner, "handle_" + name.replace(".", "_")), f"{owner.__name__} lacks a handler for {name}"


@pytest.mark.parametrize("name", COMMANDS)
def test_client_has_a_method(name):
    client = Client("127.0.0.1", 1)  # redis-py connects lazily: nothing is sent here
    target = client
    for part in CLIENT.get(name, name).split("."):
        target = getattr(target, part, None)
        assert target is not None, f"no client method for {name}"
    assert callable(target)


@pytest.mark.parametrize("name", COMMANDS)
def test_docs_page_describes_it(name):
    domain = name.split(".")[0] if "." in name else "core"
    page = DOCS / f"{domain}.md"
    assert page.exists(), f"no docs page {page.name} for {name}"
    assert f"`{name}`" in page.read_text() or f"## {name}" in page.read_text()
