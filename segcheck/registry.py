"""Name -> object registries filled by the ``segcheck_register_*`` hooks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from segcheck import SegcheckError
from segcheck.references import import_reference, is_reference


@dataclass(frozen=True)
class Entry:
    """One registered object: its name, the callable, its metadata and the plugin it came from."""

    name: str
    obj: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)
    plugin: str = "?"


class Registry:
    """Names of one kind (``"model"``, ``"dataset"``, ``"metric"``); a duplicate name is an error,
    and so is metadata outside ``meta_keys`` (a misspelled key would otherwise do nothing)."""

    def __init__(
        self,
        kind: str,
        meta_keys: tuple[str, ...] = (),
        choices: dict[str, tuple] | None = None,
        required: tuple[str, ...] = (),
        hints: dict[str, str] | None = None,
        references: bool = False,
    ):
        self.kind = kind
        self.meta_keys = meta_keys
        self.choices = choices or {}  # meta key -> the values it may take
        self.required = required
        self.hints = hints or {}  # name prefix -> why names with it are missing (an absent optional plugin)
        self.references = references  # whether an unknown module:callable name is imported (segcheck.references)
        self.referenced: set[str] = set()  # the names added that way
        self._entries: dict[str, Entry] = {}
        self._plugin = "?"

    def add(self, name: str, obj: Callable[..., Any], **meta: Any) -> None:
        """Register ``obj`` under ``name``; raise if the name is taken or a meta key is unknown."""
        if not isinstance(name, str) or not name:
            raise SegcheckError(f"{self.kind} names must be non-empty strings, got {name!r} from plugin {self._plugin}")
        if not callable(obj):
            raise SegcheckError(f"{self.kind} {name!r} from plugin {self._plugin} is not callable: {obj!r}")
        unknown = sorted(set(meta) - set(self.meta_keys))
        if unknown:
            raise SegcheckError(
                f"{self.kind} {name!r} from plugin {self._plugin} has unknown metadata {', '.join(unknown)}; "
                f"known: {', '.join(self.meta_keys)}"
            )
        missing = [key for key in self.required if key not in meta]
        if missing:
            raise SegcheckError(
                f"{self.kind} {name!r} from plugin {self._plugin} needs {', '.join(missing)}"
                + "".join(f" (one of {', '.join(map(repr, self.choices[k]))})" for k in missing if k in self.choices)
            )
        for key, allowed in self.choices.items():
            if key in meta and meta[key] not in allowed:
                raise SegcheckError(
                    f"{self.kind} {name!r} from plugin {self._plugin} has {key}={meta[key]!r}; "
                    f"known: {', '.join(map(repr, allowed))}"
                )
        if name in self._entries:
            other = self._entries[name].plugin
            raise SegcheckError(
                f"{self.kind} {name!r} registered twice (by {other} and by {self._plugin}); rename one of them"
            )
        self._entries[name] = Entry(name, obj, dict(meta), self._plugin)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises, listing the known ones. With
        ``references``, an unknown ``module.path:callable`` or ``file.py:callable`` (whose part
        before the colon is no prefix of registered or hinted names, e.g. ``smp:``) is imported
        and registered under ``name``, from the module or file it names."""
        if name in self._entries:
            return self._entries[name]
        hint = next((why for prefix, why in self.hints.items() if name.startswith(prefix)), None)
        if hint:
            raise SegcheckError(f"unknown {self.kind} {name!r}: {hint}")
        known = ", ".join(sorted(self._entries)) or "(none)"
        if self.references and is_reference(name) and not self._prefixed(name):
            obj, origin = import_reference(name, self.kind, f"known {self.kind}s: {known}")
            with self.provided_by(origin):
                self.add(name, obj)
            self.referenced.add(name)
            return self._entries[name]
        raise SegcheckError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")

    def _prefixed(self, name: str) -> bool:
        """Whether ``name``'s part before its first colon, colon included, begins registered names."""
        prefix = name.split(":", 1)[0] + ":"
        return any(known.startswith(prefix) for known in self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def provided_by(self, plugin: str):
        """Attribute every ``add`` inside the block to ``plugin``."""
        previous, self._plugin = self._plugin, plugin
        try:
            yield self
        finally:
            self._plugin = previous
