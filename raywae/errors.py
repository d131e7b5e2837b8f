"""The one error of bad input (ConfigError: file, line, dotted key, message), its exit status,
and the value check every config section uses. Imports nothing of raywae."""

from __future__ import annotations

from collections.abc import Mapping

EXIT_BAD_INPUT = 2  # every CLI's exit status for bad input (a file, key, flag)


class ConfigError(ValueError):
    """A bad config or search-space entry: `key` is the dotted path (e.g. `objective.beta`),
    `source` the file and `line` (when known) where it stands; the message reads
    `file:line: key: message`."""

    def __init__(
        self, key: str, message: str, source: str = "<dict>", line: int | None = None
    ) -> None:
        self.key, self.message, self.source, self.line = key, message, source, line
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key or '<root>'}: {message}")

    def located(self, source: str, lines: Mapping[str, int], prefix: str = "") -> ConfigError:
        """The same error with `prefix` before its key, placed in `source` at the line of the
        key (or of its nearest enclosing key) in `lines` (see read_yaml)."""
        key = f"{prefix}{self.key}" if self.key else prefix.rstrip(".")
        probe = key
        while probe and probe not in lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return ConfigError(key, self.message, source, lines.get(probe))


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless ok (value checks in __post_init__)."""
    if not ok:
        raise ConfigError(key, message)
