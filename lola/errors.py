"""The one root exception type of lola-stream, and its few families.

Every error the project raises on purpose derives from :class:`LolaError`, so a
caller (the CLI, the worker loop) can tell our clear, expected failures from
bugs. Subclasses also derive from the matching builtin so that ordinary
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class LolaError(Exception):
    """Root of every error lola-stream raises deliberately."""


class ConfigError(LolaError, ValueError):
    """A parameter, setting or CLI argument breaks one of its rules."""

    @classmethod
    def from_validation(cls, exc: Exception, what: str) -> "ConfigError":
        """One line for the first rule a pydantic model broke: ``<what> <field>: <message>``.

        ``exc`` is a ``pydantic.ValidationError`` (read through its ``errors()``, so this
        bottom layer does not import pydantic).
        """
        first = exc.errors()[0]  # type: ignore[attr-defined]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        return cls(f"{what} {where}: {message}")


class KernelInputError(LolaError, ValueError):
    """Arrays handed to a kernel wrapper have the wrong dtype, shape or range."""


class CapacityError(LolaError, RuntimeError):
    """State cannot hold another experiment or arm."""


class EventError(LolaError, ValueError):
    """An input event is malformed. ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class DataError(LolaError, ValueError):
    """A data file (CSV, priors, truth file) is missing, unreadable or malformed."""


class ModelIntegrityError(LolaError, RuntimeError):
    """A model file is missing or its sha256 differs from the model card."""


class ExportValidationError(LolaError, RuntimeError):
    """ONNX Runtime output differs from torch beyond the documented tolerance."""


class BrokerError(LolaError, RuntimeError):
    """A Kafka operation failed. Keeps librdkafka's error code and name."""

    def __init__(self, message: str, code: int | None = None, name: str | None = None) -> None:
        self.code = code
        self.name = name
        suffix = f" [librdkafka {name} ({code})]" if code is not None else ""
        super().__init__(message + suffix)

    @classmethod
    def from_kafka_error(cls, message: str, err: object) -> "BrokerError":
        """Wrap a ``confluent_kafka.KafkaError`` keeping its code and name."""
        code = getattr(err, "code", None)
        name = getattr(err, "name", None)
        return cls(
            f"{message}: {err}",
            code=code() if callable(code) else code,
            name=name() if callable(name) else name,
        )
