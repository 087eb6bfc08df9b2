"""StatsActor: facts about the node (info.*), its OS processes (process.*) and its metrics
(aggregator.query).

The actor lives in the private actor-plane network namespace; facts about the network are
read from inside the node's namespace.

Metrics: jobs' level-10 (statsd) lines arrive from the JobSupervisor in batches (`Metrics`), and
every `stats_interval` seconds the actor samples the node itself (CPU, memory, disks, network, as
the original core0's `monitor` did). Both feed one `Aggregator` (system/aggregator.py), per period
of `stats_periods`; each closed sample is pushed to the list `statistics:<period>`, and the state
is saved in Redis at every period's end so that a restarted StatsActor carries on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import psutil
import redis

from g8os.actors.base import Actor
from g8os.messages.aggregator import AggregatorQuery
from g8os.messages.errors import FailedPrecondition, InvalidArgument, NotFound
from g8os.messages.info import InfoCpu, InfoDisk, InfoMem, InfoNic, InfoOs, InfoPort, InfoVersion
from g8os.messages.internal import Call, Metrics
from g8os.messages.process import ProcessKill, ProcessList
from g8os.system import info, processes
from g8os.system.aggregator import AVERAGE, DIFFERENTIAL, PERIODS, Aggregator, Point
from g8os.system.linux import in_netns, same_namespace
from g8os.system.redisconn import connect

STATE_KEY = "g8os:aggregator:state"     # the aggregator's state, saved at each period's end
STATISTICS = "statistics:{period}"      # closed samples, as the original pushed them
STATISTICS_LENGTH = 10_000              # each statistics list is trimmed to this many
MIB = 1024.0 * 1024.0
Sample = tuple[str, float, str, dict[str, str]]


class StatsActor(Actor):
    kind = "stats"

    def on_start(self) -> bool:
        try:
            self.node_netns: int | None = os.open("/proc/1/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.node_netns = None
        self.aggregator = Aggregator(self.config.stats_periods or PERIODS)
        self.interval = float(self.config.stats_interval)
        self.points: list[Point] = []   # closed samples waiting for Redis
        self.redis = connect(self.config.redis)
        self._restore()
        psutil.cpu_percent(percpu=True)  # primes the CPU percentages: the next call measures from here
        if self.interval > 0:
            self.after(min(1.0, self.interval), "_sample_node")
        self._arm_tick()
        return True

    def on_stop(self) -> None:
        if hasattr(self, "aggregator"):
            self._save()

    def node_info(self) -> dict[str, Any]:
        if not hasattr(self, "aggregator"):
            return {}
        return {"metrics": len(self.aggregator), "periods": list(self.aggregator.periods),
                "points_waiting": len(self.points)}

    # ---- metrics ---------------------------------------------------------------------------------

    def receiveMsg_Metrics(self, msg: Metrics, sender: Any) -> None:
        for key, value, op, tags, ts in msg.samples:
            try:
                self.points += self.aggregator.feed(key, value, op, tags, now=ts)
            except ValueError:
                continue  # parse_statsd let nothing else through; a foreign sender's problem

    def after_message(self) -> None:
        if getattr(self, "points", None):
            self._push()

    def _arm_tick(self) -> None:
        # At the end of each shortest period (aligned like the samples' starts), a little after.
        period = self.aggregator.periods[0]
        self.after(period - time.time() % period + 0.05, "_tick")

    def _tick(self) -> None:
        self.points += self.aggregator.close_periods(time.time())
        self._push()
        self._save()
        self._arm_tick()

    def _push(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        by_period: dict[int, list[str]] = {}
        for point in self.points:
            by_period.setdefault(point.period, []).append(json.dumps(point.to_dict()))
        for period, texts in by_period.items():
            key = STATISTICS.format(period=period)
            pipe.rpush(key, *texts)
            pipe.ltrim(key, -STATISTICS_LENGTH, -1)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            del self.points[:-STATISTICS_LENGTH]  # pushed with the next ones, once Redis answers
            return
        self.points = []

    def _save(self) -> None:
        try:
            self.redis.set(STATE_KEY, json.dumps(self.aggregator.dump()))
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            pass  # saved at the next period's end

    def _restore(self) -> None:
        try:
            saved = self.redis.get(STATE_KEY)
            if saved:
                self.aggregator.load(json.loads(saved))
        except (redis.RedisError, OSError, ValueError, TypeError):
            pass  # start afresh: metrics are statistics, not records

    def _sample_node(self) -> None:
        now = time.time()
        for key, value, op, tags in node_samples(self.node_netns):
            self.points += self.aggregator.feed(key, value, op, tags, now=now)
        self.after(self.interval, "_sample_node")

    def handle_aggregator_query(self, request: AggregatorQuery, call: Call) -> Any:
        return self.aggregator.query(request.key, request.tags)

    def handle_info_cpu(self, request: InfoCpu, call: Call) -> Any:
        return info.cpu()

    def handle_info_mem(self, request: InfoMem, call: Call) -> Any:
        return info.mem()

    def handle_info_disk(self, request: InfoDisk, call: Call) -> Any:
        return info.disk()

    def handle_info_nic(self, request: InfoNic, call: Call) -> Any:
        with in_netns(self.node_netns):
            return info.nic()

    def handle_info_os(self, request: InfoOs, call: Call) -> Any:
        return info.os_info()

    def handle_info_port(self, request: InfoPort, call: Call) -> Any:
        with in_netns(self.node_netns):
            return info.port()

    def handle_info_version(self, request: InfoVersion, call: Call) -> Any:
        return info.version()

    def handle_process_list(self, request: ProcessList, call: Call) -> Any:
        return processes.list_processes(_pid(request.pid, request.id))

    def handle_process_kill(self, request: ProcessKill, call: Call) -> Any:
        pid = _pid(request.pid, request.id)
        if pid is None:
            raise InvalidArgument("`arguments.pid`: is required", field="arguments.pid")
        if pid == 1 or _in_actor_plane(pid):
            raise FailedPrecondition(f"pid {pid} is part of core0 itself; use actor.kill for fault injection")
        processes.kill_process(pid, request.signal)
        return True


def _pid(pid: int | None, legacy_id: str | None) -> int | None:
    """`pid`, or G8OS 1.0's `id` (a pid in a string)."""
    if pid is not None:
        return pid
    if legacy_id is None or legacy_id == "":
        return None
    if legacy_id.isdigit():
        return int(legacy_id)
    raise NotFound(f"no process {legacy_id!r} (give a pid)")


def _in_actor_plane(pid: int) -> bool:
    """Processes of the private actor plane are core0 itself, not node processes."""
    try:
        return same_namespace("net", pid)
    except OSError:
        return False


# ---- the node's own metrics (the original core0's `monitor`: same keys, units and tags) ----------


def node_samples(node_netns: int | None) -> list[Sample]:
    """One sample of every metric core0 keeps about the node itself; a part that cannot be read
    is skipped (an odd /proc must not stop the others)."""
    samples: list[Sample] = []
    for part in (_cpu_samples, _memory_samples, _disk_samples):
        try:
            samples += part()
        except (OSError, psutil.Error, ValueError):
            continue
    try:
        with in_netns(node_netns):  # /proc/net/dev shows the reading thread's namespace
            samples += _network_samples()
    except (OSError, psutil.Error, ValueError):
        pass
    return samples


def _cpu_samples() -> list[Sample]:
    phys = {"type": "phys"}
    samples: list[Sample] = []
    for nr, times in enumerate(psutil.cpu_times(percpu=True)):
        samples.append(("machine.CPU.utilisation", times.user + times.system, DIFFERENTIAL,
                        {"id": str(nr), **phys}))
    for nr, percent in enumerate(psutil.cpu_percent(percpu=True)):
        samples.append(("machine.CPU.percent", percent, AVERAGE, {"id": str(nr), **phys}))
    with open("/proc/stat") as stat:
        for line in stat:
            name, _, rest = line.partition(" ")
            if name in ("ctxt", "intr"):
                key = "machine.CPU.contextswitch" if name == "ctxt" else "machine.CPU.interrupts"
                samples.append((key, float(rest.split()[0]), DIFFERENTIAL, dict(phys)))
    threads = 0
    for proc in psutil.process_iter(["num_threads"]):
        threads += proc.info.get("num_threads") or 0
    samples.append(("machine.process.threads", float(threads), AVERAGE, dict(phys)))
    return samples


def _memory_samples() -> list[Sample]:
    phys = {"type": "phys"}
    memory, swap = psutil.virtual_memory(), psutil.swap_memory()
    return [("machine.memory.ram.available", memory.available / MIB, AVERAGE, dict(phys)),
            ("machine.memory.swap.left", swap.free / MIB, AVERAGE, dict(phys)),
            ("machine.memory.swap.used", swap.used / MIB, AVERAGE, dict(phys))]


def _disk_samples() -> list[Sample]:
    samples: list[Sample] = []
    for name, counters in (psutil.disk_io_counters(perdisk=True) or {}).items():
        tags = {"id": name, "type": "phys"}
        samples += [("disk.iops.read", float(counters.read_count), DIFFERENTIAL, dict(tags)),
                    ("disk.iops.write", float(counters.write_count), DIFFERENTIAL, dict(tags)),
                    ("disk.throughput.read", counters.read_bytes / 1024, DIFFERENTIAL, dict(tags)),
                    ("disk.throughput.write", counters.write_bytes / 1024, DIFFERENTIAL, dict(tags))]
    mounts: dict[str, tuple[str, str]] = {}
    for part in psutil.disk_partitions(all=False):
        mounts.setdefault(part.device, (part.mountpoint, part.fstype))  # any mountpoint will do
    for device, (mountpoint, fstype) in mounts.items():
        try:
            usage = psutil.disk_usage(mountpoint)
        except OSError:
            continue
        tags = {"id": os.path.basename(device), "type": "phys", "fs": fstype}
        samples += [("disk.size.total", float(usage.total), AVERAGE, dict(tags)),
                    ("disk.size.free", float(usage.free), AVERAGE, dict(tags))]
    return samples


def _network_samples() -> list[Sample]:
    samples: list[Sample] = []
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if name == "lo":
            continue
        tags = {"id": name, "type": "phys"}
        samples += [("network.throughput.outgoing", counters.bytes_sent / MIB, DIFFERENTIAL, dict(tags)),
                    ("network.throughput.incoming", counters.bytes_recv / MIB, DIFFERENTIAL, dict(tags)),
                    ("network.packets.tx", float(counters.packets_sent), DIFFERENTIAL, dict(tags)),
                    ("network.packets.rx", float(counters.packets_recv), DIFFERENTIAL, dict(tags))]
    return samples
