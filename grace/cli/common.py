"""What every command shares: one-line errors, and the encode options from ``EncodeSettings``."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TypeVar

from ..model.settings import EncodeSettings

EXIT_BAD_INPUT = 2
T = TypeVar("T")


class CliError(Exception):
    """An error to show as one line (exit code 2)."""


# the settings' options form one group in --help (HfArgumentParser reads this attribute)
EncodeSettings._argument_group_name = "encoder, rationale and pooling (EncodeSettings)"


def add_command(sub, name: str, *, help: str, description: str, settings: bool = False,
                config: type | None = None, **kw):
    """A sub-command whose parser is an ``HfArgumentParser``: with ``settings=True`` every field of
    ``EncodeSettings`` becomes one of its options, with ``config=`` every field of that dataclass."""
    types = ([EncodeSettings] if settings else []) + ([config] if config else [])
    return sub.add_parser(name, help=help, description=description, dataclass_types=types, **kw)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` from a parsed namespace (the inverse of HfArgumentParser's options)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init})


def encode_settings(args: argparse.Namespace) -> EncodeSettings:
    """The command's ``EncodeSettings``, refused with one line before any model is loaded."""
    from ..model.backbone import adapter_not_found, resolve_adapter
    from ..model.prompts import get_template

    s = from_args(EncodeSettings, args)
    try:
        s.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if s.adapter is not None and not resolve_adapter(s.adapter).is_dir():
        raise CliError(adapter_not_found(s.adapter))
    get_template(s.prompt)
    return s
