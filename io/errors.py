"""The one error railcar.io raises for a stdio target that cannot be used."""


class StdioError(Exception):
    """A stdio target (URI or path) is malformed, missing, unwritable or failed to start.

    The message always names the target, because the caller (the shim) forwards it to containerd,
    where it is the only clue the user gets about which of stdin/stdout/stderr was wrong.
    """

    def __init__(self, target: str, problem: str) -> None:
        super().__init__(f"{target!r}: {problem}")
        self.target = target
        self.problem = problem
