"""core0's side of the Redis bus: connections, the accept script, and result publishing
that survives a redis-server restart (an outbox that is flushed when Redis is back).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from g8os.messages.command import (
    RESULT_TTL,
    STREAM_LENGTH,
    STREAM_TTL,
    Result,
    flag_key,
    result_key,
    stream_key,
)

# The gateway's in-flight list: commands taken from `core:default` that no owner has recorded yet.
INFLIGHT = "g8os:gateway:inflight"

# Process jobs go from the gateway to the JobSupervisor through Redis: accepted inside the STEP
# below, they move atomically from the gateway's in-flight list to JOB_QUEUE; the JobSupervisor
# moves them to JOB_INFLIGHT and removes them once each job's record is written.
JOB_QUEUE = "g8os:jobs:queue"
JOB_INFLIGHT = "g8os:jobs:inflight"

# One step of the gateway, atomic and in one round trip, for a batch of judged commands.
# KEYS = queue, in-flight list; ARGV = ttl, take, recovering, then per command:
# (id, answer, raw, stream entry, target list).
# Status per command, in order:
#   -1  no usable id: dropped
#    2  answered already: dropped
#    0  its flag exists: a duplicate id, dropped (when recovering after a restart, our own
#       command, which proceeds as accepted instead)
#    1  accepted: the flag is created with no TTL (known and running); a known answer
#       (ping, bad arguments, unknown command) is published at once, after its stream entry
#       when the command asked for one; a command with a target list (process jobs) moves
#       there
# A command leaves the in-flight list unless it was accepted for an actor to answer (builtins:
# they leave once answered). Then up to `take` waiting commands move to the in-flight list;
# they are returned as the last element: the next batch.
STEP = f"""
local ttl, take, recovering = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local statuses = {{}}
for i = 4, #ARGV, 5 do
  local id, answer, raw, entry, target = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local status = -1
  if id ~= '' then
    local flag, result = 'result:' .. id .. ':flag', 'result:' .. id
    if redis.call('EXISTS', result) == 1 then status = 2
    elseif redis.call('EXISTS', flag) == 1 and not recovering then status = 0
    else
      if redis.call('EXISTS', flag) == 0 then redis.call('RPUSH', flag, '') end
      status = 1
      if answer ~= '' then
        if entry ~= '' then
          redis.call('RPUSH', 'stream:' .. id, entry)
          redis.call('EXPIRE', 'stream:' .. id, {STREAM_TTL})
        end
        redis.call('RPUSH', result, answer)
        redis.call('EXPIRE', result, ttl)
        redis.call('EXPIRE', flag, ttl)
      elseif target ~= '' then
        redis.call('RPUSH', target, raw)
      end
    end
  end
  if status ~= 1 or answer ~= '' or target ~= '' then redis.call('LREM', KEYS[2], 1, raw) end
  statuses[#statuses + 1] = status
end
local items = {{}}
if take > 0 then
  items = redis.call('LRANGE', KEYS[1], 0, take - 1)
  if #items > 0 then
    redis.call('LTRIM', KEYS[1], #items, -1)
    redis.call('RPUSH', KEYS[2], unpack(items))
  end
end
statuses[#statuses + 1] = items
return statuses
"""

# Move up to ARGV[1] commands from KEYS[1] to KEYS[2] and return them (a batch after a blocking move).
TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
end
return items
"""

# Publish a final result once: a flush retried after a dropped connection must not push it twice.
PUBLISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


def connect(config: Any, *, timeout: float = 5.0) -> redis.Redis:
    """A client on the node's Redis unix socket (the actor plane never uses TCP)."""
    return redis.Redis(unix_socket_path=config.socket, password=config.password or None,
                       socket_timeout=timeout, socket_connect_timeout=1.0, decode_responses=False)


class Outbox:
    """Writes that must reach Redis eventually, in order: results, stream entries, flags.

    `flush()` sends everything in one pipeline; when Redis is down the writes stay queued
    (bounded) and the owner retries later. Nothing a job produced is lost on core0's side.
    """

    def __init__(self, conn: redis.Redis, limit: int = 100_000) -> None:
        self.conn = conn
        # EVALSHA straight into the pipeline: redis-py's Script objects make every pipeline
        # that holds one ask SCRIPT EXISTS first, one more round trip per flush.
        self._publish_sha = conn.register_script(PUBLISH).sha
        self.queue: collections.deque[tuple[str, tuple[Any, ...]]] = collections.deque()
        self.limit = limit
        self.failed_since = 0.0
        self.dropped = 0

    def add(self, op: str, *args: Any) -> None:
        if len(self.queue) >= self.limit:
            # Only stream entries are ever dropped under pressure; results never are.
            for index, (queued_op, _) in enumerate(self.queue):
                if queued_op == "stream":
                    del self.queue[index]
                    self.dropped += 1
                    break
        self.queue.append((op, args))

    def result(self, result: Result) -> None:
        self.add("result", result.id, result.to_json())

    def stream(self, job_id: str, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        if entries:
            self.add("stream", job_id, entries)

    def flag(self, job_id: str) -> None:
        self.add("flag", job_id)

    def push(self, key: str, values: Iterable[str], trim: int = 0) -> None:
        self.add("push", key, tuple(values), trim)

    def __len__(self) -> int:
        return len(self.queue)

    def flush(self) -> bool:
        """Send all queued writes. True when the queue is empty afterwards."""
        if not self.queue:
            return True
        batch = list(self.queue)
        pipe = self.conn.pipeline(transaction=False)
        publishes: list[tuple[int, str, str]] = []   # (reply index, job id, body)
        for op, args in batch:
            if op == "result":
                job_id, body = args
                publishes.append((len(pipe.command_stack), job_id, body))
                pipe.evalsha(self._publish_sha, 2, result_key(job_id), flag_key(job_id), body, RESULT_TTL)
            elif op == "stream":
                job_id, entries = args
                key = stream_key(job_id)
                pipe.rpush(key, *entries)
                pipe.ltrim(key, -STREAM_LENGTH, -1)
                pipe.expire(key, STREAM_TTL)
            elif op == "flag":
                pipe.rpush(flag_key(args[0]), "")
            elif op == "lrem":
                pipe.lrem(args[0], 1, args[1])
            elif op == "push":
                key, values, trim = args
                if values:
                    pipe.rpush(key, *values)
                    if trim:
                        pipe.ltrim(key, -trim, -1)
        try:
            replies = pipe.execute(raise_on_error=False)
            # A redis-server that restarted has forgotten the script: load it, publish again
            # (publishing is idempotent), the rest of the pipeline went through.
            missed = [(job_id, body) for index, job_id, body in publishes
                      if isinstance(replies[index], redis.exceptions.NoScriptError)]
            if missed:
                self._publish_sha = self.conn.script_load(PUBLISH)
                retry = self.conn.pipeline(transaction=False)
                for job_id, body in missed:
                    retry.evalsha(self._publish_sha, 2, result_key(job_id), flag_key(job_id), body,
                                  RESULT_TTL)
                retry.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
            if not self.failed_since:
                self.failed_since = time.monotonic()
            return False
        for _ in batch:
            self.queue.popleft()
        self.failed_since = 0.0
        return not self.queue


class QueueConsumer:
    """A thread that moves commands from a Redis list to its in-flight list and hands them over.

    `deliver(items, recovering)` is called on the thread: first once with what the in-flight list
    already holds (left by a previous incarnation; recovering=True), then with each batch taken
    (a blocking move for the first, then up to `batch` more in one round trip). The owner removes
    an item from the in-flight list once it is safely recorded. Reconnects with backoff.
    """

    def __init__(self, config: Any, queue: str, inflight: str,
                 deliver: Callable[[list[bytes], bool], None], *, batch: int = 128) -> None:
        self.config, self.queue, self.inflight, self.deliver = config, queue, inflight, deliver
        self.batch = batch
        self.stop = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=f"consume {queue}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        delay, conn, recovered = 0.05, None, False
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.config, timeout=5.0)
                    take = conn.register_script(TAKE)
                if not recovered:
                    self.deliver(list(conn.lrange(self.inflight, 0, -1)), True)
                    recovered = True
                first = conn.blmove(self.queue, self.inflight, 1, "LEFT", "RIGHT")
                if first is None:
                    continue
                rest = take(keys=[self.queue, self.inflight], args=[self.batch - 1])
                self.deliver([first, *rest], False)
                delay = 0.05
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError,
                    redis.ResponseError):
                conn = None
                self.errors += 1
                self.stop.wait(delay)
                delay = min(delay * 2, 2.0)
