"""The ``clustercore`` command.

* ``clustercore worker [--bind-to ADDR[:PORT]] [--lifeline] [--link-fd FD]``: run a worker (Julia's ``--worker``);
* ``clustercore worker --join HOST:PORT [...]``: dial a running driver and join its cluster; the installed
  plugin that registers the ``join`` command (clustercore-elastic) does it, with the arguments as given;
* ``clustercore -p N script.py [args]`` / ``--machine-file FILE [--sshflags FLAGS] [--tunnel]``: run a
  script with workers added (also ``-c CODE`` and ``-m MODULE``; ``--exename PYTHON`` for the workers;
  the program runs as it would under ``python``); a launch that fails is one line on stderr, exit 1;
* ``clustercore managers``: list the installed manager plugins;
* ``clustercore top [--pid OSPID] [--once [--calls]]``: a live view of a running driver's cluster
  (a driver that has added workers, or is run by this command, can be attached to unless ``CLUSTERCORE_ATTACH=0``;
  ``CLUSTERCORE_METRICS=PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` makes it serve Prometheus metrics);
* other subcommands come from plugins (``cli_commands`` hook).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return _worker(argv[1:])
    if argv[:1] == ["managers"]:
        return _managers()
    if argv[:1] == ["top"]:
        from .top import main as top

        return top(argv[1:])
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".py"):
        from .engine.hooks import cli_commands

        command = cli_commands().get(argv[0])
        if command is not None:
            return int(command(argv[1:]) or 0)
    return _run_script(argv)


def _worker(argv: list[str]) -> int:
    if any(arg == "--join" or arg.startswith("--join=") for arg in argv):
        return _join(argv)
    parser = argparse.ArgumentParser(prog="clustercore worker", description="Run a clustercore worker.")
    parser.add_argument(
        "--join", metavar="HOST:PORT", help="dial a driver that accepts joining workers (see --join -h)"
    )
    parser.add_argument(
        "--bind-to",
        metavar="ADDR[:PORT]",
        help="address (and port) to listen on; 'ssh': the one the SSH connection that started the worker"
        " arrived on; 'host': the one the host's name resolves to (default: every interface)",
    )
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
    from .engine.worker import start_worker

    start_worker(bind_to=args.bind_to, lifeline=args.lifeline, driver_link=link)
    return 0


def _join(argv: list[str]) -> int:
    """``clustercore worker --join ...``: the plugin command ``join`` gets the arguments as they are."""
    from .engine.hooks import cli_commands

    command = cli_commands().get("join")
    if command is None:
        print(
            "clustercore worker --join: no installed plugin accepts joining workers (pip install clustercore-elastic)",
            file=sys.stderr,
        )
        return 2
    return int(command(argv) or 0)


def _managers() -> int:
    from .engine.hooks import installed_plugins, manager_types

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


_TAKES_VALUE = ("-p", "--procs", "--machine-file", "--sshflags", "--exename")


def _split_program(argv: list[str]) -> tuple[list[str], list[str]]:
    """``clustercore``'s own options, and the program with its arguments (``script.py ...``,
    ``-c CODE ...`` or ``-m MODULE ...``): like python's, everything after the program is its."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1 :]
        if arg[:2] in ("-c", "-m") or not arg.startswith("-") or arg == "-":
            return argv[:i], argv[i:]
        i += 2 if arg in _TAKES_VALUE else 1
    return argv, []


def _run_script(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="clustercore",
        usage="clustercore [-p N | --machine-file FILE [--sshflags FLAGS] [--tunnel]] [--exename PYTHON] "
        "(script.py | -c CODE | -m MODULE) [args ...]",
        description="Run a Python program with clustercore workers already added (Julia's julia -p N); "
        "the program runs as `python script.py`, `python -c CODE` or `python -m MODULE` would.",
        epilog="subcommands: worker, managers (and those of installed plugins)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-p", "--procs", metavar="N", help="number of local workers, or 'auto'")
    group.add_argument("--machine-file", metavar="FILE", help="SSH machines, one spec per line")
    ssh = parser.add_argument_group("with --machine-file (the SSH plugin's keywords)")
    ssh.add_argument("--sshflags", metavar="FLAGS", help="ssh options, one string: --sshflags '-i KEY -o ...'")
    ssh.add_argument("--tunnel", action="store_true", help="reach the workers through the SSH connections")
    parser.add_argument("--exename", metavar="PYTHON", help="the workers' Python (default: this one's path)")
    options, program = _split_program(argv)
    args = parser.parse_args(options)
    if (args.sshflags is not None or args.tunnel) and not args.machine_file:
        parser.error("--sshflags and --tunnel go with --machine-file")
    if not program:
        parser.error("nothing to run: give a script, -c CODE or -m MODULE")
    run = _program(parser, program)  # before any worker starts: a missing script is an error now
    import clustercore

    generic = {} if args.exename is None else {"exename": args.exename}
    from .attach import attach_by_default

    try:
        attach_by_default()  # addprocs would; here also for a program run without workers (docs/observability.md)
    except ValueError as exc:  # CLUSTERCORE_ATTACH neither on nor off
        print(f"clustercore: {exc}", file=sys.stderr)
        return 1
    metrics_at = os.environ.get("CLUSTERCORE_METRICS", "")
    if metrics_at:  # PORT (on loopback), HOST:PORT or [IPV6]:PORT: serve the metrics before the workers join
        from .metrics import metrics_address, serve_metrics

        try:
            host, port = metrics_address(metrics_at)
            serve_metrics(port, host)
        except ValueError as exc:
            print(f"clustercore: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"clustercore: cannot serve metrics at CLUSTERCORE_METRICS={metrics_at!r}: {exc}", file=sys.stderr)
            return 1
    try:
        if args.procs is not None:
            if args.procs == "auto":
                clustercore.addprocs(**generic)
            elif args.procs.isdigit() and int(args.procs) > 0:
                clustercore.addprocs(int(args.procs), **generic)
            else:
                parser.error(f"-p takes a positive number or 'auto', not {args.procs!r}")
        elif args.machine_file:
            from .engine.hooks import manager_class

            if manager_class("ssh") is None:
                parser.error("--machine-file needs the SSH plugin: pip install clustercore-ssh")
            ssh_options = {"sshflags": args.sshflags or (), "tunnel": args.tunnel}
            clustercore.addprocs("ssh", machine_file=args.machine_file, **ssh_options, **generic)
        elif args.exename is not None:
            parser.error("--exename goes with -p or --machine-file")
    except (ValueError, TypeError, OSError) as exc:  # a bad file or flag, a host that failed: said in words
        print(f"clustercore: cannot add the workers: {exc}", file=sys.stderr)
        return 1
    try:
        run()
    finally:
        from clustercore.processes import terminate_all_workers

        terminate_all_workers()
    return 0


def _program(parser: argparse.ArgumentParser, program: list[str]) -> Callable[[], object]:
    """Check the program exists and set ``sys.path[0]`` and ``sys.argv`` as python would
    (workers added next get the same path); returns what runs it."""
    first, rest = program[0], program[1:]
    if first[:2] == "-c":
        code = first[2:] or (rest.pop(0) if rest else parser.error("-c needs an argument"))
        sys.path[0] = ""
        sys.argv = ["-c", *rest]
        return lambda: _run_code(code)
    if first[:2] == "-m":
        module = first[2:] or (rest.pop(0) if rest else parser.error("-m needs an argument"))
        sys.path[0] = os.getcwd()
        import importlib.util

        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            print(f"clustercore: No module named {module}", file=sys.stderr)
            raise SystemExit(1)
        sys.argv = [module, *rest]  # run_module puts the module's file in argv[0]
        return lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    if not os.path.exists(first):
        print(
            f"clustercore: can't open file {os.path.abspath(first)!r}: [Errno 2] No such file or directory",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # a script's own directory (symbolic links resolved); a directory or zip file with a __main__.py, itself
    sys.path[0] = first if not os.path.isfile(first) or _is_zip(first) else os.path.dirname(os.path.realpath(first))
    sys.argv = [first, *rest]
    return lambda: runpy.run_path(first, run_name="__main__")


def _is_zip(path: str) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _run_code(code: str) -> None:
    """``python -c``: ``code`` runs in a fresh ``__main__`` (whose functions travel by value)."""
    import types

    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = main
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    finally:
        sys.modules["__main__"] = saved
