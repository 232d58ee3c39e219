"""Finishing touches on the command tree Typer builds, before it runs.

- Help shows what to type: no ``<bool>`` after a flag, ``{create,append,replace}`` for a
  choice, the element type of a repeatable option or argument (not ``<list[str]>``), and
  a usage line of plain names (``FILE``, ``ID...``; braces are kept for choices).
- ``--server URL`` is accepted after a client command too (``tether login alice --server
  URL``), as well as before it.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from typer.core import TyperArgument, TyperOption

NO_SERVER = frozenset({"gen-csv", "new-task"})  # client-side commands that never talk to a server


def element_label(param: TyperOption | TyperArgument) -> str:
    """``<int>`` for ``list[int]``, the choices for a choice, else the type's name."""
    desc = param.type_descriptor
    if desc.is_choice and desc.choices:
        return "{" + ",".join(str(getattr(c, "value", c)) for c in desc.choices) + "}"
    annotation: Any = desc.annotation
    if desc.is_list and get_args(annotation):
        annotation = get_args(annotation)[0]
    return f"<{getattr(annotation, '__name__', 'str')}>"


def usage_piece(param: TyperArgument) -> str:
    name = param.metavar or (param.name or "").upper()
    if name.startswith("["):  # the metavar says it already
        return name
    if param.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name if param.required else f"[{name}]"


def tidy_param(param: Any) -> None:
    if isinstance(param, TyperOption):
        if param.is_flag or param.count:
            param.metavar = ""
        elif param.metavar is None and (param.multiple or param.type_descriptor.is_choice):
            param.metavar = element_label(param)
    elif isinstance(param, TyperArgument):
        # set on the instance: this spares subclassing Typer's parameter classes
        piece = usage_piece(param)
        param.get_usage_pieces = lambda ctx: [piece]  # type: ignore[method-assign]
        if param.type_descriptor.is_list or param.type_descriptor.is_choice:
            label = element_label(param)
            param.display_type_rich = lambda ctx: label  # type: ignore[method-assign]


def server_option(root: Any) -> Any | None:
    """A copy of the root's ``--server`` that a subcommand accepts: it stores the URL
    where the root's would (``ctx.obj``, set by the root callback, which runs first)."""
    option = next((p for p in root.params if "--server" in p.opts), None)
    if option is None:
        return None
    copied = copy.copy(option)
    copied.expose_value = False

    def store(ctx: Any, _param: Any, value: str | None) -> str | None:
        obj = ctx.find_root().obj
        if value is not None and isinstance(obj, dict):
            obj["server"] = value
        return value

    copied.callback = store
    return copied


def tidy(command: Any, server: Any | None = None) -> None:
    """Tidy the help of ``command`` and its subcommands; append ``server`` (an option) to
    every client subcommand."""
    for param in command.params:
        tidy_param(param)
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            tidy_param(option)
        return option

    command.get_help_option = help_option
    for name, sub in (getattr(command, "commands", None) or {}).items():
        client = name not in NO_SERVER and getattr(sub, "rich_help_panel", None) != "Server"
        if server is not None and client:
            sub.params.append(server)
        tidy(sub, server if client else None)


def prepare(root: Any) -> Any:
    """The root command, tidied, its client commands taking ``--server`` too."""
    tidy(root, server_option(root))
    return root
