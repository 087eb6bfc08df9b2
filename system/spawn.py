"""Starting node processes from an actor: own process group, pipes, optional network namespace.

Uses subprocess's vfork path (fast: about posix_spawn's cost) but keeps the exit status for
our own reaper: a Popen object that ever polls would steal statuses from `waitpid(-1)`
(research/thespian.md §5), so each Popen is marked finished the moment it is created and
forgotten; the host's reaper owns the pid from then on.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import attrs

from g8os.messages.errors import InvalidArgument, NotFound
from g8os.system import linux

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@attrs.frozen
class Spawned:
    pid: int
    stdout: int          # non-blocking read end, owned by the caller
    stderr: int
    start_ticks: int     # /proc/<pid>/stat starttime: tells a live pid from a reused one


def process_start_ticks(pid: int) -> int:
    """The start time of a pid in clock ticks since boot, or 0 if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return 0
    # comm may hold spaces and parentheses: fields start after the last ')'
    fields = data[data.rfind(b")") + 2:].split()
    return int(fields[19])


def spawn(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
          stdin: bytes = b"", netns_fd: int | None = None) -> Spawned:
    """Start `argv` in a new process group with piped stdout/stderr.

    stdin is a memfd (any size, never blocks the actor); `netns_fd` puts the process in
    another network namespace (the node's, while the actor lives in the private actor plane).
    """
    if cwd and not os.path.isdir(cwd):
        raise InvalidArgument(f"`arguments.dir`: no such directory: {cwd}", field="arguments.dir")
    full_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    if env:
        full_env.update(env)
    stdin_fd: int | None = None
    if stdin:
        stdin_fd = os.memfd_create("g8os-stdin", os.MFD_CLOEXEC)
        os.write(stdin_fd, stdin)
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        with linux.in_netns(netns_fd):
            proc = subprocess.Popen(
                list(argv), stdin=stdin_fd if stdin_fd is not None else subprocess.DEVNULL,
                stdout=out_w, stderr=err_w, env=full_env, cwd=cwd or None, close_fds=True,
                process_group=0, restore_signals=True,
            )
    except FileNotFoundError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        raise NotFound(f"executable not found: {argv[0]}") from exc
    except OSError as exc:  # EACCES, ENOTDIR, ENOEXEC, E2BIG...: the request is what is wrong
        for fd in (out_r, err_r):
            os.close(fd)
        raise InvalidArgument(f"`arguments.name`: cannot execute {argv[0]}: {exc.strerror}",
                              field="arguments.name") from exc
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
        if stdin_fd is not None:
            os.close(stdin_fd)
    # Our reaper owns the pid now: a Popen that polls or is collected by subprocess._cleanup
    # would reap it behind our back.
    proc.returncode = 0
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    return Spawned(proc.pid, out_r, err_r, process_start_ticks(proc.pid))


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def exit_code(status: int) -> tuple[int, int]:
    """(exit status, signal) of a wait status; one of them is 0."""
    if os.WIFSIGNALED(status):
        return 0, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), 0
    return 0, 0


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)
