"""Runs lava-server 2023.01's own split_multinode_yaml (Debian's lava-server, installed under
/usr/lib/python3/dist-packages) on submissions, for tests/multinode_split.rs.

stdin: a JSON list of YAML texts. stdout: a JSON list, one entry per text:
  {"jobs": {role: [sub-job, ...]}, "orders": {role: [[top-level keys], [lava-multinode keys]]}}
  or {"error": exception class name, "message": str(exception)}.
Key order is reported separately because comparing dicts ignores it.
"""
import json
import sys

from django.conf import settings

# utils imports the submission schema, which reads this setting at import time.
settings.configure(EXTRA_CONTEXT_VARIABLES=[])

import yaml  # noqa: E402
from lava_scheduler_app.utils import split_multinode_yaml  # noqa: E402

TARGET_GROUP = "f00dcafe-0000-4000-8000-000000000000"


def run(text):
    submission = yaml.safe_load(text)
    try:
        jobs = split_multinode_yaml(submission, TARGET_GROUP)
    except Exception as exc:  # every failure is reported, whatever its class
        return {"error": type(exc).__name__, "message": str(exc)}
    orders = {
        role: [
            [list(job), list(job["protocols"]["lava-multinode"])] for job in role_jobs
        ]
        for role, role_jobs in jobs.items()
    }
    return {"jobs": jobs, "orders": orders}


print(json.dumps([run(text) for text in json.load(sys.stdin)]))
