"""Julia's --machine-file format."""

from __future__ import annotations

from pathlib import Path

import pytest
from clustercore_ssh import parse_machine_file, parse_machines


def test_julia_format(tmp_path: Path) -> None:
    path = tmp_path / "machines"
    path.write_text(
        "# comment\n\nhost1   # the first\n2*user@host2:2222\n auto * host3 10.0.0.3:9000\t# listens there\n"
        "[fd00::1]:22 [fd00::1]\n3*host1 # two more there\n"
    )
    machines = parse_machine_file(path)
    assert machines == [
        "host1",
        ("user@host2:2222", 2),
        ("host3 10.0.0.3:9000", "auto"),
        "[fd00::1]:22 [fd00::1]",
        ("host1", 3),
    ]
    assert (parse_machines(machines)[0].text, parse_machines(machines)[0].count) == ("host1", 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [("x*host", "count must be a positive int or 'auto'"), ("0*host", "count must be"), ("host:bad", "invalid port")],
)
def test_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "machines"
    path.write_text(f"ok-host\n{line}\n")
    with pytest.raises(ValueError, match=message) as info:
        parse_machine_file(path)
    assert str(info.value).startswith(f"{path}:2: ")


def test_the_readme_machine_file_parses(tmp_path: Path) -> None:
    """The README's example, trailing comment included (it used to be rejected)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("$ cat machines\n", 1)[1].split("$ clustercore", 1)[0]
    path = tmp_path / "machines"
    path.write_text(block)
    assert parse_machine_file(path) == ["node1", ("node2:2222", 4), ("node3 10.0.0.3", "auto")]
