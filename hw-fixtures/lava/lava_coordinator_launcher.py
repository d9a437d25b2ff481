#!/usr/bin/python3
"""Runs Debian's packaged lava-coordinator (unmodified) bound to one address instead of 0.0.0.0.

LavaCoordinator.run() binds ("0.0.0.0", port) whatever its host argument says ("TODO: use
self.host"). This launcher swaps the `socket` name inside lava.coordinator for a copy of the
socket module whose socket class rewrites bind() to the address given with --bind, then starts
the daemon exactly as /usr/bin/lava-coordinator does (same options, logger and format).
Used by labd-hw-fixtures (peers/lava_coordinator.rs); see real-peers.md section 3.
"""
import argparse
import json
import logging
import logging.handlers
import pathlib
import socket as real_socket
import sys
import time
import types

import lava.coordinator
from lava.coordinator import LavaCoordinator

parser = argparse.ArgumentParser(description="LAVA coordinator (loopback launcher)")
parser.add_argument("--logfile", default="-")
parser.add_argument("--loglevel", "-l", default="INFO", choices=["DEBUG", "ERROR", "INFO", "WARN"])
parser.add_argument("--config", type=pathlib.Path, required=True)
parser.add_argument("--bind", default="127.0.0.1")
options = parser.parse_args()


class LoopbackSocket(real_socket.socket):
    def bind(self, address):
        return super().bind((options.bind, address[1]))


patched = types.ModuleType("socket")
patched.__dict__.update(real_socket.__dict__)
patched.socket = LoopbackSocket
lava.coordinator.socket = patched

logging.Formatter.convert = time.gmtime
LOG = logging.getLogger("lava-coordinator")
if options.logfile == "-":
    handler = logging.StreamHandler(sys.stdout)
else:
    handler = logging.handlers.WatchedFileHandler(options.logfile)
handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)7s %(message)s"))
LOG.addHandler(handler)
LOG.setLevel({"ERROR": logging.ERROR, "WARN": logging.WARN, "INFO": logging.INFO}.get(options.loglevel, logging.DEBUG))
LOG.info("[INIT] LAVA coordinator has started.")
LOG.info("[INIT] Loading configuration from %s", options.config)
config = json.loads(options.config.read_text(encoding="utf-8"))
LavaCoordinator(
    config.get("coordinator_hostname", "localhost"),
    config.get("port", 3079),
    config.get("blocksize", 4096),
).run()
