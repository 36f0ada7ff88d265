"""Click commands that take unique prefixes of long options, as argparse does.

sheep and sheepfs parsed their options with argparse until they moved to
click, the house library; argparse takes `--fore` for `--foreground`, and
scripts written against them may too. click has no such matching, so
`AbbrevCommand` spells out a unique prefix before click parses: an exact
name wins, an ambiguous prefix is a usage error naming the candidates,
and anything else is left for click to refuse.
"""

from __future__ import annotations

from collections.abc import Iterable

import click


def expand_prefixes(args: list[str], names: Iterable[str]) -> list[str]:
    """`args` with each `--PREFIX[=VALUE]` that starts exactly one of the
    long option `names` spelled out; `--` ends the options, as in click.
    Raises click.UsageError for a prefix of several names."""
    longs = sorted(set(names))
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and len(name) > 2 and name not in longs:
            found = [n for n in longs if n.startswith(name)]
            if len(found) > 1:
                raise click.UsageError(
                    f"ambiguous option: {name} could match {', '.join(found)}")
            if found:
                arg = found[0] + eq + value
        out.append(arg)
    return out


class AbbrevCommand(click.Command):
    """A click command that also takes unique prefixes of its long options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = (opt for param in self.get_params(ctx)
                 for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--"))
        try:
            args = expand_prefixes(args, names)
        except click.UsageError as e:
            e.ctx = ctx  # for the usage line, like click's own errors
            raise
        return super().parse_args(ctx, args)
