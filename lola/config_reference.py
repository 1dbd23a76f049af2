"""Operations commands: ``lola config reference`` (and the helpers behind it).

The settings reference is generated from the worker's one settings object
(:mod:`lola.stream.settings`), never written by hand, so the documentation and
the deploy files cannot drift from the code: ``tests/deploy`` checks every
``LOLA_*``/``KAFKA_*`` name used in ``deploy/`` against :func:`env_fields`.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from lola.errors import ConfigError

SETTINGS_MODULE = "lola.stream.settings"
# Preferred class names, in order; otherwise the module's only BaseSettings subclass.
SETTINGS_CLASS_NAMES = ("WorkerSettings", "Settings", "StreamSettings", "LolaSettings")
# Substrings that mark a setting as secret: its default is never printed.
SECRET_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "KEY_PASSWORD", "SASL_PASSWORD")


@dataclass(frozen=True)
class EnvField:
    """One environment variable read by the settings object."""

    env: str
    field_path: str
    type_name: str
    default: str
    required: bool
    description: str

    @property
    def secret(self) -> bool:
        return any(marker in self.env.upper() for marker in SECRET_MARKERS)


def settings_class(module_name: str = SETTINGS_MODULE) -> type:
    """Return the worker's settings class (a pydantic-settings ``BaseSettings``)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"settings module {module_name} cannot be imported: {exc}") from exc
    from pydantic_settings import BaseSettings

    for name in SETTINGS_CLASS_NAMES:
        cls = getattr(module, name, None)
        if inspect.isclass(cls) and issubclass(cls, BaseSettings):
            return cls
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ConfigError(f"{module_name} must define exactly one BaseSettings class, found {len(found)}")
    return found[0]


def _type_name(annotation: Any) -> str:
    import types
    from typing import Literal, Union, get_args, get_origin

    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(parts) + (" or unset" if type(None) in args else "")
    if inspect.isclass(annotation) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


def _alias_names(field: Any) -> list[str]:
    """Environment names given explicitly by ``validation_alias`` or ``alias``."""
    from pydantic import AliasChoices, AliasPath

    alias = field.validation_alias if field.validation_alias is not None else field.alias
    if alias is None:
        return []
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str)]
        # A lower-case choice equal to the field name is the keyword (CLI flag) spelling;
        # the upper-case choices are the documented environment names.
        upper = [c for c in names if c.isupper()]
        return upper or names
    if isinstance(alias, AliasPath):
        return [alias.path[0]] if alias.path and isinstance(alias.path[0], str) else []
    return []


def _default_text(field: Any) -> tuple[str, bool]:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "(required)", True
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # factories that take validated data
            return "(computed)", False
    else:
        value = field.default
    if value is PydanticUndefined:
        return "(required)", True
    if hasattr(value, "get_secret_value"):
        return "(secret)", False
    return repr(value) if not isinstance(value, str) else (value if value else '""'), False


def env_fields(cls: type | None = None) -> list[EnvField]:
    """Every environment variable the settings class reads, sorted by name.

    Follows pydantic-settings' rules: an explicit alias is used as is (no
    prefix); otherwise ``env_prefix + field_name``; nested models are expanded
    with ``env_nested_delimiter`` when one is configured. Names are upper-cased
    unless the class is case-sensitive.
    """
    from pydantic import BaseModel

    cls = cls or settings_class()
    config = cls.model_config
    prefix = config.get("env_prefix", "") or ""
    delimiter = config.get("env_nested_delimiter") or ""
    case_sensitive = bool(config.get("case_sensitive", False))
    rows: list[EnvField] = []

    def visit(model: type, env_prefix: str, path: str, top: bool) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            aliases = _alias_names(field) if top else []
            names = aliases or [f"{env_prefix}{name}"]
            nested = inspect.isclass(annotation) and issubclass(annotation, BaseModel)
            if nested and delimiter:
                for base in names:
                    visit(annotation, f"{base}{delimiter}", f"{path}{name}.", top=False)
                continue
            default, required = _default_text(field)
            for env in names:
                rows.append(
                    EnvField(
                        env=env if case_sensitive else env.upper(),
                        field_path=f"{path}{name}",
                        type_name=_type_name(annotation),
                        default=default,
                        required=required,
                        description=(field.description or "").strip(),
                    )
                )

    visit(cls, prefix, "", top=True)
    return sorted(rows, key=lambda r: r.env)


def env_names(cls: type | None = None) -> set[str]:
    """The set of environment variable names the settings class reads."""
    return {row.env for row in env_fields(cls)}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference(cls: type | None = None) -> str:
    """The settings reference as Markdown (what ``docs/configuration.md`` holds)."""
    cls = cls or settings_class()
    rows = env_fields(cls)
    config = cls.model_config
    env_file = config.get("env_file")
    lines = [
        "# Settings reference",
        "",
        f"Generated by `lola config reference` from `{cls.__module__}.{cls.__name__}`; do not edit by hand.",
        "",
        "Regenerate with `lola config reference --out docs/configuration.md`; `--check` says whether it is current.",
        "",
        "Every setting is read from the environment"
        + (f" and from the env file `{env_file}`" if env_file else "")
        + "; the environment wins. Secret values are never printed or logged.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    for row in rows:
        default = "(secret)" if row.secret and not row.required else row.default
        lines.append(
            f"| `{row.env}` | {_cell(row.type_name)} | `{_cell(default)}` | {_cell(row.description) or '—'} |"
        )
    lines.append("")
    return "\n".join(lines)


config_app = typer.Typer(help="Settings: the generated reference.", no_args_is_help=True)


@config_app.command("reference")
def reference(
    out: Path = typer.Option(None, "--out", help="Write the Markdown here instead of stdout."),
    check: bool = typer.Option(False, "--check", help="Exit 1 if --out differs from what would be generated."),
) -> None:
    """Print (or write) the settings reference generated from the settings object."""
    text = render_reference()
    if out is None:
        if check:
            raise ConfigError("--check needs --out FILE")
        typer.echo(text, nl=False)
        return
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != text:
            typer.echo(f"{out} is out of date; run: lola config reference --out {out}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out} ({len(env_fields())} settings)")


def register(app: typer.Typer) -> None:
    """Add ``lola config ...`` to the root app."""
    app.add_typer(config_app, name="config")
