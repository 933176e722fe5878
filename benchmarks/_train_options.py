"""The `-- <keras-vae train options>` tail of the benchmarks that wrap `keras-vae train`."""

from __future__ import annotations


def split_output(rest: list[str]) -> tuple[list[str], str]:
    """(the train options without `--output DIR`, DIR) from the arguments after `--`."""
    rest = rest[1:] if rest[:1] == ["--"] else list(rest)
    if "--output" not in rest[:-1]:
        raise SystemExit("give the run directory among the train options: -- ... --output DIR")
    at = rest.index("--output")
    return rest[:at] + rest[at + 2 :], rest[at + 1]
