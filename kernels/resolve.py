"""The one resolver of `package.module:attribute` names that configs, jobs and specs give.

Importing a module runs its code, so a name is checked against an allow-list of module
prefixes before anything is imported. A prefix allows the module itself and every module
below it: "torchvision.models" allows "torchvision.models.resnet", not "torchvision.io".

Example:
    >>> imports = AllowList()
    >>> imports.resolve("augserve.kernels.resolve:AllowList", field="architecture")
    <class 'augserve.kernels.resolve.AllowList'>
    >>> imports.check("os:system", field="architecture")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ImportRefused: architecture: 'os:system' is outside the allowed modules (augserve, ...)

The server gives its allow-list an error class of its own (`augserve.server.errors.
ImportRefused`, an InvalidArgument), so a refusal reaches a client as INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from typing import Any

DEFAULT_PREFIXES: tuple[str, ...] = ("augserve", "torchvision.models")
"""Modules augserve itself names: its own architectures and torchvision's model zoo."""


class ImportRefused(Exception):
    """A `module:attribute` name that is malformed, not allowed, or cannot be imported.

    Attributes:
        field: where the name came from (e.g. "source.architecture").
        target: the name as given.
        allowed: the allowed module prefixes.
        reason: what is wrong, in words.
    """

    def __init__(self, field: str, target: str, allowed: tuple[str, ...], reason: str) -> None:
        """Say which `field` named `target` and why it is refused."""
        super().__init__(f"{field}: {target!r} {reason}")
        self.field = field
        self.target = target
        self.allowed = allowed
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImportRefused], tuple[str, str, tuple[str, ...], str]]:
        # Rebuilt from its parts when it crosses a process (a Ray actor or task).
        return type(self), (self.field, self.target, self.allowed, self.reason)


def _is_module_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


@dataclasses.dataclass(frozen=True)
class AllowList:
    """Module prefixes whose `module:attribute` names may be imported.

    Attributes:
        prefixes: allowed modules (each with everything below it).
        error: the class raised on refusal: `ImportRefused` or a subclass of it.
    """

    prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    error: type[ImportRefused] = ImportRefused

    def __post_init__(self) -> None:
        prefixes = tuple(prefix.strip().rstrip(".") for prefix in self.prefixes)
        bad = [prefix for prefix in prefixes if not _is_module_name(prefix)]
        if bad:
            raise ValueError(f"import prefixes must be dotted module names, got {bad}")
        object.__setattr__(self, "prefixes", tuple(dict.fromkeys(prefixes)))

    def with_extra(self, extra: Iterable[str]) -> AllowList:
        """This allow-list with the `extra` prefixes added (an operator's own modules)."""
        return dataclasses.replace(self, prefixes=(*self.prefixes, *extra))

    def allows(self, module: str) -> bool:
        """Whether `module` is one of the prefixes or lies below one."""
        return any(module == prefix or module.startswith(prefix + ".")
                   for prefix in self.prefixes)

    def check(self, target: str, field: str) -> tuple[str, str]:
        """Split `target` into (module, attribute) if it is well formed and allowed.

        Nothing is imported. Raises `self.error` naming `field` otherwise.
        """
        module, sep, attribute = str(target).partition(":")
        if not sep or not _is_module_name(module) or not _is_module_name(attribute):
            raise self.error(field, str(target), self.prefixes,
                             "is not a 'package.module:attribute' name")
        if not self.allows(module):
            raise self.error(field, target, self.prefixes,
                             f"is outside the allowed modules ({', '.join(self.prefixes)})")
        return module, attribute

    def resolve(self, target: str, field: str) -> Any:
        """The object `target` ("package.module:attribute", dotted attributes too) names.

        Raises:
            ImportRefused (`self.error`): the name is malformed or outside `prefixes`
                (checked before any import), or the module or attribute does not exist.
        """
        module_name, attribute = self.check(target, field)
        try:
            value: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as error:
            raise self.error(field, target, self.prefixes,
                             f"cannot be imported: {error}") from None
        return value
