"""Go-style flag parsing as containerd invokes the shim."""

import pytest

from railcar.shim.flags import FlagError, Flags, parse


def test_start_argv_as_containerd_sends_it() -> None:
    flags = parse(
        ["-namespace", "default", "-address", "/t/c.sock", "-publish-binary", "/usr/bin/containerd",
         "-id", "t1", "-debug", "start"]
    )
    assert flags == Flags(namespace="default", address="/t/c.sock", publish_binary="/usr/bin/containerd",
                          id="t1", debug=True, action="start")


def test_delete_with_bundle_and_equals_form() -> None:
    flags = parse(["--namespace=k8s.io", "-id=x", "-bundle", "/b/x", "delete"])
    assert (flags.namespace, flags.id, flags.bundle, flags.action) == ("k8s.io", "x", "/b/x", "delete")


def test_no_action_runs_the_daemon_and_bools_take_explicit_values() -> None:
    flags = parse(["-id", "a", "-debug=false", "-v=true"])
    assert flags.action == "" and flags.debug is False and flags.version is True


def test_to_argv_round_trips() -> None:
    flags = Flags(namespace="n", address="/a", id="i", bundle="/b", debug=True)
    assert parse(flags.to_argv()) == flags


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["-id"], "flag needs an argument: -id"),
        (["-debug=maybe"], "invalid boolean value 'maybe' for -debug"),
        (["-id", "x", "launch"], "unknown action 'launch'"),
        (["start", "extra"], "unexpected arguments after the action: extra"),
        (["---id", "x"], "bad flag syntax: ---id"),
    ],
)
def test_bad_command_lines_name_the_problem(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse(argv)
