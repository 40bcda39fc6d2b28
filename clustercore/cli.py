"""The ``clustercore`` command.

* ``clustercore worker [--bind-to ADDR[:PORT]] [--lifeline] [--link-fd FD]``: run a worker (Julia's ``--worker``);
* ``clustercore -p N script.py [args]`` / ``--machine-file FILE``: run a script with workers added;
* ``clustercore managers``: list the installed manager plugins;
* other subcommands come from plugins (``cli_commands`` hook).
"""

from __future__ import annotations

import argparse
import runpy
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return _worker(argv[1:])
    if argv[:1] == ["managers"]:
        return _managers()
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".py"):
        from .hooks import cli_commands

        command = cli_commands().get(argv[0])
        if command is not None:
            return int(command(argv[1:]) or 0)
    return _run_script(argv)


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clustercore worker", description="Run a clustercore worker.")
    parser.add_argument("--bind-to", metavar="ADDR[:PORT]", help="address (and port) to listen on")
    parser.add_argument("--lifeline", action="store_true", help="exit when stdin reaches end of file")
    parser.add_argument(
        "--link-fd",
        metavar="FD",
        type=int,
        help="an inherited connected socket to serve like an accepted connection (the launcher's link)",
    )
    args = parser.parse_args(argv)
    link = None
    if args.link_fd is not None:
        import socket

        try:
            link = socket.socket(fileno=args.link_fd)
        except OSError as exc:
            parser.error(f"--link-fd {args.link_fd} is not an open socket: {exc}")
    from .worker import start_worker

    start_worker(bind_to=args.bind_to, lifeline=args.lifeline, driver_link=link)
    return 0


def _managers() -> int:
    from .hooks import installed_plugins, manager_types

    types = manager_types()
    rows = []
    for info in installed_plugins():
        names = [n for n, cls in types.items() if cls.__module__.split(".")[0] == info.module.split(".")[0]]
        status = f"failed to load: {info.error}" if info.error else ", ".join(names) or "(no managers)"
        rows.append((info.name, info.distribution, info.version, status))
    if not rows:
        print("no clustercore manager plugins are installed (try: pip install clustercore-local)")
        return 0
    table = [("name", "distribution", "version", "managers"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(col.ljust(width) for col, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _run_script(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clustercore",
        description="Run a Python script with clustercore workers already added (Julia's julia -p N).",
        epilog="subcommands: worker, managers (and those of installed plugins)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-p", "--procs", metavar="N", help="number of local workers, or 'auto'")
    group.add_argument("--machine-file", metavar="FILE", help="SSH machines, one spec per line")
    parser.add_argument("script", help="the script to run as __main__")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    args = parser.parse_args(argv)
    import clustercore

    if args.procs is not None:
        if args.procs == "auto":
            clustercore.addprocs()
        elif args.procs.isdigit() and int(args.procs) > 0:
            clustercore.addprocs(int(args.procs))
        else:
            parser.error(f"-p takes a positive number or 'auto', not {args.procs!r}")
    elif args.machine_file:
        try:
            from clustercore_ssh.machinefile import parse_machine_file  # type: ignore[import-not-found]
        except ImportError:
            parser.error("--machine-file needs the SSH plugin: pip install clustercore-ssh")
        clustercore.addprocs(parse_machine_file(args.machine_file))
    sys.argv = [args.script, *args.args]
    try:
        runpy.run_path(args.script, run_name="__main__")
    finally:
        from clustercore.processes import terminate_all_workers

        terminate_all_workers()
    return 0
