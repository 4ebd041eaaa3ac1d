"""The runtime's error types: every failure names the stage it happened in and its cause.

The shim maps these onto ttrpc status codes, so the classes carry intent (not found, bad spec,
anything else) rather than the errno that happened to surface.
"""


def shorten(text: str, limit: int = 4096) -> str:
    """`text` cut to about `limit` characters in its middle, saying so. An error can quote a value of
    the spec (an environment entry, an argument: megabytes at worst), and it travels to the caller
    in one message, whose size is bounded; its start names the field, its end the problem."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters left out ...] {text[-half:]}"


class RuntimeFailure(Exception):
    """A runtime operation failed; ``stage`` says where ("spec", "namespaces", "rootfs", ...)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class SpecError(RuntimeFailure):
    """config.json is invalid; ``path`` is the JSON path of the offending field."""

    def __init__(self, path: str, problem: str) -> None:
        RuntimeFailure.__init__(self, "spec", f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.args = (f"{path}: {problem}",)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class ContainerNotFound(RuntimeFailure):
    """No container with that id exists under the state root."""

    def __init__(self, container_id: str) -> None:
        super().__init__("state", f"container {container_id!r} does not exist")
        self.container_id = container_id


class ContainerExists(RuntimeFailure):
    """A container with that id already exists under the state root."""

    def __init__(self, container_id: str) -> None:
        super().__init__("state", f"container {container_id!r} already exists")
        self.container_id = container_id


class InvalidState(RuntimeFailure):
    """The verb is not allowed in the container's current status (e.g. start of a running one)."""

    def __init__(self, verb: str, status: str) -> None:
        super().__init__(verb, f"cannot {verb} a container that is {status}")
        self.status = status
