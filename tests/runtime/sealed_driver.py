"""Plays the shim's forker for test_security: seals itself, then runs one container.

Usage: python sealed_driver.py BUNDLE ID STATE_ROOT  → prints {"status", "output"} as JSON.
"""

import json
import os
import sys

from railcar.runtime import Container
from railcar.runtime import syscalls as sc
from railcar.runtime.sealing import reexec_sealed


def main() -> None:
    reexec_sealed()
    bundle, container_id, root = sys.argv[1:4]
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    r, w = os.pipe()
    container, result = Container.create(container_id, bundle, root=root, stdio=(w, w, w))
    os.close(w)
    container.start()
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == result.pid:
            break
    container.delete()
    print(json.dumps({"status": os.waitstatus_to_exitcode(status), "output": out.decode()}))


if __name__ == "__main__":
    main()
