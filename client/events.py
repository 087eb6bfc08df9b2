"""`client.events`: state changes of the actor tree and of jobs (g8os adds).

    client.events.list(topic="/actor", limit=20)["events"]
    for event in client.events.follow(path="/jobs"):      # until interrupted
        print(event["ts"], event["topic"], event["path"], event["data"])

`follow` reads the stream `g8os:events` itself, with XREAD BLOCK: nothing is polled.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from g8os.client.transport import SLICE, Namespace, Timeout
from g8os.messages.events import EVENTS_STREAM, EventsList, from_entry, matches

PAGE = 1000


class EventsManager(Namespace):
    """`events.list`, and `follow()` to read new events as they are written."""

    def list(self, since: str | float | None = None, topic: str | None = None, path: str | None = None,
             limit: int | None = None) -> dict[str, Any]:
        """Events after `since` (a stream id like `1700000000123-0`, or epoch seconds), oldest first,
        at most `limit` (default 100); without `since`, the last `limit`. `topic` and `path` keep
        the events under them (`/actor` takes `/actor/exited`). Returns `{"events": [...], "last":
        id}`: pass `last` as the next `since` to read on (it covers skipped events too)."""
        return self._call(EventsList, since=since, topic=topic, path=path, limit=limit)

    def follow(self, since: str | float | None = None, topic: str | None = None,
               path: str | None = None, *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the events after `since` (None: only new ones), then every new event as it is
        written, until `timeout` seconds have passed (None: for ever, until the caller stops)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if since is None:
            cursor = self.list(limit=1)["last"]
        else:
            position: str | float = since
            while True:  # what the stream already holds after `since`, page by page
                page = self.list(since=position, topic=topic, path=path, limit=PAGE)
                yield from page["events"]
                position = cursor = page["last"]
                if len(page["events"]) < PAGE:
                    break
        connection = self._client.connection  # type: ignore[attr-defined]
        while True:
            wait = SLICE
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise Timeout(f"{EVENTS_STREAM}: followed for {timeout:g}s")
            reply = connection.call("xread", {EVENTS_STREAM: cursor}, PAGE, max(1, int(wait * 1000)))
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    event = from_entry(entry_id, fields)
                    cursor = event["id"]
                    if matches(event, topic, path):
                        yield event
