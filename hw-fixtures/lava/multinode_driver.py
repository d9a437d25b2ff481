#!/usr/bin/python3
"""Drives lava-dispatcher 2023.01's real Multi-Node code against a coordinator.

stdin: a JSON scenario {"group": G, "timeout": seconds, "nodes": [{"job_id": "100",
"role": "server", "lines": ["<LAVA_MULTI_NODE> <LAVA_SEND ...>", ...]}, ...]}.
Every node runs in its own thread with its own MultinodeProtocol (the dispatcher's client:
group_data at start, clear_group at the end) and the real Multi-Node SignalDirector; each
console line is matched and split exactly as MultinodeMixin.check_patterns does and handed to
SignalDirector.signal(). What the director writes back to the "console" is recorded.
stdout: one JSON object per node: {"job_id", "steps": [{"line", "console", "result", "ret"}]}.
Used by labd's interop tests (hw-fixtures/src/peers/lava_dispatcher.rs).
"""
import argparse
import json
import re
import sys
import threading

from lava_common.exceptions import LAVAError, MultinodeProtocolTimeoutError
from lava_dispatcher.actions.test.multinode import MultinodeMixin
from lava_dispatcher.protocols.multinode import MultinodeProtocol

PATTERN = re.compile(r"<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>")

parser = argparse.ArgumentParser()
parser.add_argument("--host", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--poll-delay", type=float, default=1)
options = parser.parse_args()
scenario = json.load(sys.stdin)
roles = {n["job_id"]: n["role"] for n in scenario["nodes"]}


class Console:
    """Stands in for the DUT connection: records what sendline() writes."""

    def __init__(self):
        self.written = ""

    def sendline(self, line, delay=0):
        self.written += line + "\n"


def run_node(node, results):
    params = {
        "protocols": {
            "lava-multinode": {
                "target_group": scenario["group"],
                "role": node["role"],
                "group_size": len(scenario["nodes"]),
                "roles": roles,
                "timeout": {"seconds": scenario["timeout"]},
            }
        }
    }
    proto = MultinodeProtocol(params, node["job_id"])
    proto.debug_setup()
    proto.settings["port"] = options.port
    proto.settings["coordinator_hostname"] = options.host
    proto.settings["poll_delay"] = options.poll_delay
    proto.base_message.update({"port": options.port, "host": options.host, "poll_delay": options.poll_delay, "hostname": "worker"})
    proto.initialise_group()
    director = MultinodeMixin.SignalDirector(proto)
    director.setup(params["protocols"])
    steps = []
    for line in node["lines"]:
        console = Console()
        director.connection = console
        step = {"line": line}
        match = PATTERN.search(line)
        name, text = match.groups()
        split = re.split(r"\s+(?=\w+(?:=))", text) if name == "SEND" else text.split()
        case = ("multinode-%s-%s" % (name, split[0])).lower()
        try:
            step["ret"] = bool(director.signal(name, split))
            step["result"] = [case, "pass"]
        except MultinodeProtocolTimeoutError:
            step["ret"] = False
            step["result"] = [case, "fail"]
        except LAVAError as exc:
            step["error"] = type(exc).__name__
        step["console"] = console.written
        steps.append(step)
        if "error" in step or not step["ret"]:
            break
    proto.finalise_protocol()
    results[node["job_id"]] = {"job_id": node["job_id"], "steps": steps}


results = {}
threads = [threading.Thread(target=run_node, args=(n, results)) for n in scenario["nodes"]]
for t in threads:
    t.start()
for t in threads:
    t.join()
for n in scenario["nodes"]:
    print(json.dumps(results.get(n["job_id"], {"job_id": n["job_id"], "steps": None})))
