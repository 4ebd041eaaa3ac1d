"""The containerd shim v2 daemon and its bootstrap commands (start, delete, -v, -info).

Short-lived commands (light imports only): `__main__` (dispatch), `flags` (Go-style flags),
`bootstrap` (`start`), `cleanup` (`delete` and the files the daemon leaves for it), `info` (`-v`,
`-info`), `wire` (hand-encoded protobuf answers), `paths` (sockets and state roots).

The daemon: `zygote` (warm per-node process that keeps a spare daemon ready and passes each
`start` to it), `daemon` (process set-up, trio main), `forker` (forks the one-shot workers that
serve the runtime's forking calls), `reaper` (the one waitpid loop),
`process` (lifecycle table), `service` (the 17 task methods), `events` (ordered publisher),
`spawner` (binary:// loggers through the reaper), `log` (logrus lines on the bundle's log FIFO),
`pool` (the daemons containers share, and their members), `options` (containerd's runtime options,
refused), `deferred` (stdlib modules loaded on first use), `fdlimit` (the soft fd limit),
`oomscore` (the OOM score a container's processes start from).

The zygote and a cold daemon re-execute themselves from a sealed view of the interpreter
(`railcar.runtime.sealing`, CVE-2019-5736), so every daemon and forker a container is made from runs
one; `start` and `delete` never enter a container and skip that cost.

Environment knobs: RAILCAR_ZYGOTE=0 (never use the zygote), RAILCAR_ZYGOTE_IDLE (seconds before an
idle zygote exits, default 600), RAILCAR_SHIM_GRACE (seconds a daemon waits for its first Create,
default 30).
"""
