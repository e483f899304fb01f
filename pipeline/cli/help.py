"""How `kefu … --help` reads: each option's names, help and default, without typer's type tags.

typer 0.29 prints a type beside every option (`<list[Path]>`, `<int range> [x>=1]`, `<bool>` on
every flag and on --help itself). They repeat what the name and help already say and push the help
text into a narrow column, so the group below swaps, at help time, each parameter for a subclass that
shows no type; parsing and validation are untouched (the range is still enforced by the option's type).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# typer 0.29 vendors click as a private `typer._click`: its Context, Command and HelpFormatter are typed Any here.


def _no_type(self: Any, ctx: Any) -> None:
    return None


def _no_range(self: Any) -> None:
    return None


def _untagged(base: type[Any]) -> type[Any]:
    """`base` showing no type column and no range beside it. Built directly on typer's class: a mixin would
    change the instances' layout, and the swap below would fail."""
    return type(f"Plain{base.__name__}", (base,),
                {"display_type_rich": _no_type, "_get_number_range_help_str": _no_range})


_PLAIN: dict[type[Any], type[Any]] = {TyperOption: _untagged(TyperOption), TyperArgument: _untagged(TyperArgument)}


def _untag(command: Any, ctx: Any) -> None:
    for param in command.get_params(ctx):
        if type(param) in _PLAIN:
            param.__class__ = _PLAIN[type(param)]


class PlainHelpCommand(TyperCommand):
    """A command whose help shows no type tags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _untag(self, ctx)
        super().format_help(ctx, formatter)


class PlainHelpGroup(TyperGroup):
    """The `kefu` group: its own help and every sub-command's and sub-group's show no type tags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _untag(self, ctx)
        super().format_help(ctx, formatter)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if type(command) is TyperCommand:
            command.__class__ = PlainHelpCommand
        elif type(command) is TyperGroup:
            command.__class__ = PlainHelpGroup
        return command
