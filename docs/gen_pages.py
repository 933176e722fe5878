"""Pages generated at build time by the mkdocs-gen-files plugin (see mkdocs.yml).

- `reference/cli.md`: the `--help` of every `keras-vae` subcommand, taken from the parser that
  `keras_vae.cli` builds, so the reference cannot drift from the command line.
- `deployment.md`: `export/README.md` (the deployment kit's guide, one source for the repository
  and the site), its links to site pages kept and to other repository files turned into
  plain paths.

A renamed parser function or a changed parser shape fails the build with a message saying what
to update here.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
HELP_COLUMNS = "88"  # argparse wraps --help to $COLUMNS: fixed, so the page is stable


def keras_vae_parser() -> argparse.ArgumentParser:
    """The `keras-vae` parser, from the function keras_vae.cli builds it with."""
    try:
        from keras_vae.cli import build_parser
    except ImportError as error:
        raise RuntimeError(
            "docs/gen_pages.py: keras_vae.cli no longer has `build_parser`, the function that "
            "builds the `keras-vae` argparse parser; point keras_vae_parser() at its new name "
            f"({error})"
        ) from error
    built = build_parser()
    parser = built[0] if isinstance(built, tuple) else built
    if not isinstance(parser, argparse.ArgumentParser):
        raise RuntimeError(
            "docs/gen_pages.py: keras_vae.cli.build_parser() returned "
            f"{type(built).__name__}, not an ArgumentParser (or a tuple starting with one)"
        )
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """{name: (one-line help, parser)} of the parser's subcommands, in their order."""
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}
    raise RuntimeError("docs/gen_pages.py: the keras-vae parser has no subcommands")


def cli_reference() -> str:
    os.environ["COLUMNS"] = HELP_COLUMNS
    parser = keras_vae_parser()
    commands = subcommands(parser)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `keras-vae` argparse parser when the site is built: this is exactly",
        "what `keras-vae COMMAND --help` prints. The guide to the command line is",
        "[Command line](../guide/cli.md).",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, (summary, sub) in commands.items():
        lines += ["", f"## keras-vae {name}", ""]
        if summary:
            lines += [summary[0].upper() + summary[1:] + ".", ""]
        lines += ["```text", sub.format_help().rstrip(), "```"]
        if name == "train":
            lines += ["", *train_defaults(sub)]
    return "\n".join(lines) + "\n"


def train_defaults(train: argparse.ArgumentParser) -> list[str]:
    """A table of `train`'s settings: option, config-file key and default, read from the
    TrainConfig dataclass that the parser fills (its options default to "not given")."""
    import dataclasses

    try:
        from keras_vae.runs.config import TrainConfig
    except ImportError as error:
        raise RuntimeError(
            "docs/gen_pages.py: keras_vae.runs.config.TrainConfig (the defaults of `keras-vae "
            f"train`) cannot be imported; update train_defaults() ({error})"
        ) from error
    options = {a.dest: a.option_strings[0] for a in train._actions if a.option_strings}
    lines = [
        "### Settings and their defaults",
        "",
        "The defaults of `keras_vae.runs.config.TrainConfig`; a `--config` file (JSON or",
        "YAML) takes the same keys. `None` means unset: the data set, the part or the run",
        "chooses.",
        "",
        "| option | config key | default |",
        "| --- | --- | --- |",
    ]
    for field in dataclasses.fields(TrainConfig):
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = field.default
        option = options.get(field.name)
        if option is None:
            raise RuntimeError(
                f"docs/gen_pages.py: TrainConfig.{field.name} has no `keras-vae train` option"
            )
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        lines.append(f"| `{option}` | `{field.name}` | `{shown}` |")
    return lines


_LINK = re.compile(r"\[([^\]]+)\]\(([^)#]+)(#[^)]*)?\)")


def deployment_page() -> str:
    """export/README.md with relative links to repository files shown as plain paths."""
    text = (ROOT / "export" / "README.md").read_text()

    def plain(match: re.Match) -> str:
        label, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if re.match(r"[a-z]+://", target):
            return match.group(0)
        path = os.path.normpath(os.path.join("export", target))
        if path.startswith("docs/"):  # a page of this site: deployment.md sits at its root
            return f"[{label}]({path.removeprefix('docs/')}{anchor})"
        return label if label.strip("`") == path else f"{label} (`{path}`)"

    note = "<!-- generated from export/README.md by docs/gen_pages.py: edit that file -->\n\n"
    return note + _LINK.sub(plain, text)


with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(cli_reference())
with mkdocs_gen_files.open("deployment.md", "w") as page:
    page.write(deployment_page())
