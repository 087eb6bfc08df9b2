"""LogActor: the node log (core0's own records and the tree's events), written to the log file.

Later layers add `logger.subscribe` lists and the events stream on top of the same records.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any, TextIO

from g8os.actors.base import Actor
from g8os.messages.internal import Events, LogLines, ReopenLogs

BACKLOG = 1000


class LogActor(Actor):
    kind = "log"

    def on_start(self) -> bool:
        self.backlog: deque[str] = deque(maxlen=BACKLOG)
        self.file: TextIO = self._open()
        self.directory["log"] = self.myAddress
        return True

    def _open(self) -> TextIO:
        path = getattr(self.config, "log_file", "")
        if not path:
            return sys.stderr
        return open(path, "a", buffering=1, encoding="utf-8")

    def _write(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}"
        self.backlog.append(stamped)
        self.file.write(stamped + "\n")

    def receiveMsg_LogLines(self, msg: LogLines, sender: Any) -> None:
        for line in msg.lines:
            self._write(line)

    def receiveMsg_Events(self, msg: Events, sender: Any) -> None:
        for event in msg.events:
            self.events.append(event)
            self._write(f"event {event.topic} {event.path} {json.dumps(event.data, default=str)[:2000]}")

    def receiveMsg_ReopenLogs(self, msg: ReopenLogs, sender: Any) -> None:
        if self.file is not sys.stderr:
            self.file.close()
        self.file = self._open()

    def on_directory(self) -> None:
        self.directory["log"] = self.myAddress

    def emit(self, topic: str, path: str, **data: Any) -> None:
        super().emit(topic, path, **data)
        self._write(f"event {topic} {path} {json.dumps(data, default=str)[:2000]}")

    def on_stop(self) -> None:
        if getattr(self, "file", None) is not None and self.file is not sys.stderr:
            self.file.flush()

    def node_info(self) -> dict[str, Any]:
        return {"backlog": len(self.backlog)}
