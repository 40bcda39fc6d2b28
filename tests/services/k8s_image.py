"""Container images for the kubelet of ``tests/services/k8s``, built without a registry.

Writes a ``docker save`` archive (``manifest.json``, one config, one layer) that
``ctr -n k8s.io images import`` takes, for two images:

``pause --binary FILE``
    The pod sandbox: the static ``pause`` binary built from the kubernetes source tree
    (``build/pause/linux/pause.c``) as ``/pause``.

``worker --python PATH``
    The image the tests run their pods in (``python:3.11``, and the driver image
    ``example.com/team/driver:7`` of the ownerReference test). It holds a skeleton root file
    system: the merged-/usr symlinks (``/bin -> usr/bin`` ...), ``/etc/passwd`` and ``group``,
    empty ``/usr``, ``/tmp`` and ``/root``, and ``/opt/python/bin/python``, which runs PATH (first
    on the image's ``PATH``, so a pod's ``python`` is the checkout's interpreter). The
    rest comes from this machine, read-only: containerd's base runtime spec (written by
    ``tests/services/k8s``) bind-mounts the host's ``/usr``, the interpreter's prefix and the
    checkout (with its venv) at their own paths into every container. The checkout lives at a
    different path in every clone, so the image is rebuilt (a few KB) whenever that changes.

Every file's time stamp is fixed, so the same input gives the same image digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

EPOCH = 946684800  # 2000-01-01: a fixed mtime, so the layer's digest depends on content only
PATH = "/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _entry(name: str, kind: bytes, mode: int, *, target: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.size = kind, mode, EPOCH, size
    info.linkname = target
    info.uname = info.gname = "root"
    return info


def _layer(files: list[tuple[str, bytes | None, int, str]]) -> bytes:
    """A tar of (path, content or None for a directory, mode, symlink target or "")."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content, mode, target in files:
            if target:
                tar.addfile(_entry(name, tarfile.SYMTYPE, 0o777, target=target))
            elif content is None:
                tar.addfile(_entry(name, tarfile.DIRTYPE, mode))
            else:
                tar.addfile(_entry(name, tarfile.REGTYPE, mode, size=len(content)), io.BytesIO(content))
    return out.getvalue()


def _archive(path: Path, tags: list[str], layer: bytes, config: dict[str, object]) -> None:
    layer_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2000-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "tests/services/k8s_image.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": tags, "Layers": [f"{layer_id}/layer.tar"]}]
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in (
            (config_name, config_bytes),
            (f"{layer_id}/layer.tar", layer),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, size=len(content)), io.BytesIO(content))
    tmp.replace(path)


def pause_image(binary: Path) -> tuple[bytes, dict[str, object]]:
    layer = _layer([("pause", binary.read_bytes(), 0o755, "")])
    return layer, {"Entrypoint": ["/pause"], "User": "65535:65535"}


def worker_image(python: str) -> tuple[bytes, dict[str, object]]:
    # a script, not a symlink: a venv's interpreter finds its pyvenv.cfg by the path it is run as
    launcher = f'#!/bin/sh\nexec {python} "$@"\n'.encode()
    files: list[tuple[str, bytes | None, int, str]] = [
        ("bin", None, 0, "usr/bin"),
        ("sbin", None, 0, "usr/sbin"),
        ("lib", None, 0, "usr/lib"),
        ("lib64", None, 0, "usr/lib64"),
        ("usr", None, 0o755, ""),  # the host's /usr is mounted here
        ("etc", None, 0o755, ""),
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n", 0o644, ""),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644, ""),
        ("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n", 0o644, ""),
        ("root", None, 0o700, ""),
        ("tmp", None, 0o1777, ""),
        ("var", None, 0o755, ""),
        ("var/tmp", None, 0o1777, ""),
        ("opt", None, 0o755, ""),
        ("opt/python", None, 0o755, ""),
        ("opt/python/bin", None, 0o755, ""),
        ("opt/python/bin/python", launcher, 0o755, ""),
        ("opt/python/bin/python3", launcher, 0o755, ""),
    ]
    config: dict[str, object] = {
        "Env": [f"PATH={PATH}"],
        "Cmd": ["python"],
        "WorkingDir": "/",
        "Labels": {"io.clustercore.mounted-from-host": "/usr, the interpreter's prefix, the checkout (read-only)"},
    }
    return _layer(files), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["pause", "worker"])
    parser.add_argument("--out", type=Path, required=True, help="the archive to write")
    parser.add_argument("--tag", action="append", required=True, help="a name of the image (repeatable)")
    parser.add_argument("--binary", type=Path, help="pause: the static pause binary")
    parser.add_argument("--python", help="worker: what /opt/python/bin/python points at")
    args = parser.parse_args()
    if args.kind == "pause":
        if not args.binary:
            parser.error("pause needs --binary")
        layer, config = pause_image(args.binary)
    else:
        if not args.python:
            parser.error("worker needs --python")
        layer, config = worker_image(args.python)
    _archive(args.out, args.tag, layer, config)


if __name__ == "__main__":
    main()
