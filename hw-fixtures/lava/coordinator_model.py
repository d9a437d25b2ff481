#!/usr/bin/python3
"""Feeds requests to Debian's LavaCoordinator class in-process and prints its replies.

stdin: one request per line (the JSON body text). stdout: one JSON object per request:
{"reply": "<header+body as sent>"} ("" when it closed without a reply), or
{"crash": "<ExceptionName>"} where the real daemon would have died; input stops there.
Only the connection object is replaced (it records what send() is given); the request path
is the packaged dataReceived(), unchanged. Used by labd's differential tests.
"""
import json
import sys

from lava.coordinator import LavaCoordinator


class RecordingConnection:
    def __init__(self):
        self.sent = b""

    def send(self, data):
        self.sent += data
        return len(data)

    def close(self):
        pass


coordinator = LavaCoordinator("127.0.0.1", 3079, 4096)
LavaCoordinator.all_groups = {}
for line in sys.stdin:
    line = line.rstrip("\n")
    conn = RecordingConnection()
    coordinator.conn = conn
    try:
        try:
            data = json.loads(line)
        except ValueError:
            print(json.dumps({"reply": "", "json_error": True}), flush=True)
            continue
        coordinator.dataReceived(data)
    except Exception as exc:  # the daemon would die here
        print(json.dumps({"crash": type(exc).__name__}), flush=True)
        break
    print(json.dumps({"reply": conn.sent.decode("utf-8")}), flush=True)
