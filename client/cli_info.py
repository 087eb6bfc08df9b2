"""`g8os info cpu|mem|disk|nic|os|port|version`: facts about the node, as tables (`--json`: the
node's answer as it is, the keys of docs/info.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from g8os.client.cli import Options, _state, output_options
from g8os.client.render import duration, human_bytes


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def _pairs(rows: list[tuple[str, Any]]) -> Table:
    """A two-column key/value grid, for the answers that are one object."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, escape("" if value is None else str(value)))
    return grid


def _show(name: str, fetch: Callable[[Any], Any], render: Callable[[Any], Table]) -> None:
    state: Options = _state()
    with state.spinner(f"reading info.{name}"):
        data = fetch(state.client().info)
    if state.as_json:
        state.emit(data)
        return
    state.out.print(render(data))


@click.group()
def info() -> None:
    """Facts about the node: cpu, mem, disk, nic, os, port, version."""


@info.command()
@output_options
def cpu() -> None:
    """Logical CPUs: model, MHz, cache, socket, core, number of flags."""

    def render(data: list[dict[str, Any]]) -> Table:
        table = _table("CPU", "MODEL", "MHZ", "CACHE", "SOCKET", "CORE", "CORES", "FLAGS",
                       right=("CPU", "MHZ", "CACHE", "CORES", "FLAGS"))
        for entry in data:
            mhz = entry.get("mhz")
            cache = entry.get("cacheSize")
            table.add_row(str(entry.get("cpu", "")), escape(str(entry.get("modelName") or "")),
                          f"{mhz:.0f}" if isinstance(mhz, int | float) else "",
                          human_bytes(cache * 1024) if isinstance(cache, int) else "",
                          str(entry.get("physicalId") or ""), str(entry.get("coreId") or ""),
                          str(entry.get("cores") or ""), str(len(entry.get("flags") or [])))
        return table

    _show("cpu", lambda i: i.cpu(), render)


@info.command()
@output_options
def mem() -> None:
    """Memory and swap use, in bytes (KiB, MiB...)."""

    def render(data: dict[str, Any]) -> Table:
        rows: list[tuple[str, Any]] = [
            (key, human_bytes(data.get(key))) for key in
            ("total", "used", "available", "free", "buffers", "cached", "shared", "slab", "dirty")]
        rows.insert(2, ("used %", f"{data.get('usedPercent', 0):.1f}"))
        rows += [("swap total", human_bytes(data.get("swapTotal"))),
                 ("swap free", human_bytes(data.get("swapFree"))),
                 ("huge pages", f"{data.get('hugePagesFree', 0)} free of {data.get('hugePagesTotal', 0)}"
                                f" × {human_bytes(data.get('hugePageSize'))}")]
        return _pairs(rows)

    _show("mem", lambda i: i.mem(), render)


@info.command()
@output_options
def disk() -> None:
    """Mounted filesystems, as `df` shows them."""

    def render(data: list[dict[str, Any]]) -> Table:
        table = _table("DEVICE", "MOUNTPOINT", "TYPE", "SIZE", "USED", "FREE", "USE%",
                       right=("SIZE", "USED", "FREE", "USE%"))
        for entry in data:
            percent = entry.get("usedPercent")
            table.add_row(escape(str(entry.get("device", ""))), escape(str(entry.get("mountpoint", ""))),
                          escape(str(entry.get("fstype", ""))), human_bytes(entry.get("total")),
                          human_bytes(entry.get("used")), human_bytes(entry.get("free")),
                          f"{percent:.1f}" if isinstance(percent, int | float) else "")
        return table

    _show("disk", lambda i: i.disk(), render)


@info.command()
@output_options
def nic() -> None:
    """Network interfaces of the node, with their addresses."""

    def render(data: list[dict[str, Any]]) -> Table:
        table = _table("NAME", "STATE", "MAC", "MTU", "SPEED", "FLAGS", "ADDRESSES", right=("MTU", "SPEED"))
        for entry in data:
            speed = entry.get("speed")
            table.add_row(escape(str(entry.get("name", ""))), escape(str(entry.get("operstate", ""))),
                          escape(str(entry.get("hardwareaddr", ""))), str(entry.get("mtu", "")),
                          f"{speed} Mb/s" if speed else "",
                          escape(",".join(entry.get("flags") or [])),
                          escape(" ".join(a.get("addr", "") for a in entry.get("addrs") or [])))
        return table

    _show("nic", lambda i: i.nic(), render)


@info.command(name="os")
@output_options
def os_() -> None:
    """Hostname, platform, kernel, uptime, boot time, virtualization."""

    def render(data: dict[str, Any]) -> Table:
        boot = data.get("bootTime")
        platform = " ".join(str(data.get(k) or "") for k in ("platform", "platformVersion")).strip()
        virtual = " ".join(str(data.get(k) or "") for k in ("virtualizationSystem",
                                                            "virtualizationRole")).strip()
        return _pairs([
            ("hostname", data.get("hostname")),
            ("platform", platform + (f" ({data['platformFamily']})" if data.get("platformFamily") else "")),
            ("kernel", f"{data.get('kernelVersion', '')} {data.get('kernelArch', '')}".strip()),
            ("uptime", duration(data.get("uptime"))),
            ("booted", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot))
             if isinstance(boot, int | float) else ""),
            ("processes", data.get("procs")),
            ("virtualization", virtual or "none found"),
            ("host id", data.get("hostid")),
        ])

    _show("os", lambda i: i.os(), render)


@info.command()
@output_options
def port() -> None:
    """Listening sockets of the node: TCP, UDP, unix."""

    def render(data: list[dict[str, Any]]) -> Table:
        table = _table("PROTO", "ADDRESS", "PORT", "PATH", "PID", right=("PORT", "PID"))
        for entry in sorted(data, key=lambda e: (str(e.get("network")), e.get("port") or 0,
                                                 str(e.get("unix")))):
            table.add_row(escape(str(entry.get("network", ""))), escape(str(entry.get("ip") or "")),
                          str(entry.get("port") or ""), escape(str(entry.get("unix") or "")),
                          str(entry.get("pid") or ""))
        return table

    _show("port", lambda i: i.port(), render)


@info.command()
@output_options
def version() -> None:
    """The node's g8os version and git revision."""

    def render(data: dict[str, Any]) -> Table:
        return _pairs([("version", data.get("version")), ("branch", data.get("branch") or "(not git)"),
                       ("revision", data.get("revision") or ""),
                       ("dirty", "yes" if data.get("dirty") else "no")])

    _show("version", lambda i: i.version(), render)


COMMANDS = [info]
