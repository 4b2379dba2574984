"""A pydantic base for the method's settings (ranker, training) that speaks :class:`ConfigError`.

The settings objects are used both from Python (``TrainConfig(lr=1e-3)``) and as sections of a
run config; either way a bad value should read as one sentence naming the field, the value and
the fix, not as a pydantic traceback. Construction and assignment are validated.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from search_spaces.errors import ConfigError, suggest


def config_error(section: str, exc: ValidationError, known: list[str] | None = None) -> ConfigError:
    """One readable :class:`ConfigError` from a pydantic ValidationError (every problem listed).

    Args:
        section: the settings' name in messages (e.g. "train").
        exc: the validation error.
        known: the valid setting names, to suggest the closest one for a misspelt key.
    """
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "?"
        msg = str(err.get("msg", "invalid value"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            hint = suggest(loc, known or [])
            parts.append(f"{section}.{loc} is not a setting of {section}.{hint} Known settings: {', '.join(known or [])}")
        else:
            parts.append(f"{section}.{loc}={err.get('input')!r}: {msg}")
    return ConfigError("; ".join(parts) + ".")


class ConfigModel(BaseModel):
    """Base of the method's settings: unknown keys are errors, bad values raise ConfigError."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _section: str = "config"  # the name used in error messages (e.g. "train")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(self._section_name(), exc, list(type(self).model_fields)) from None

    def __setattr__(self, name, value):
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise config_error(self._section_name(), exc, list(type(self).model_fields)) from None

    @classmethod
    def _section_name(cls) -> str:
        default = cls.__private_attributes__.get("_section")
        return getattr(default, "default", None) or cls.__name__

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field (the same as ``model_dump()``)."""
        return self.model_dump()
