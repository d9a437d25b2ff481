#!/usr/bin/python3
"""Feeds requests to Debian's LavaCoordinator class in-process and prints its replies.

stdin: one request per line (the JSON body text), or "#RESET" to forget every group.
stdout: one JSON object per line: {"reply": "<header+body as sent>"} ("" when it closed
without a reply), {"reply": "", "json_error": true} when json.loads refused the body, or
{"crash": "<ExceptionName>"} where the real daemon would have died (the model then starts
again with no groups, as a restarted daemon would), or {"reset": true}.
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
    if line == "#RESET":
        LavaCoordinator.all_groups = {}
        print(json.dumps({"reset": True}), flush=True)
        continue
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
        LavaCoordinator.all_groups = {}
        continue
    print(json.dumps({"reply": conn.sent.decode("utf-8")}), flush=True)
