"""Environment parsing shared by both roles: parse once at start, fail loudly.

Every helper reads one variable from a mapping (``os.environ`` in production,
a plain dict in tests) and raises ConfigError with a one-line message naming
the variable when the value is unusable. Pure functions; thread: any.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>[^:/\s]+|\*):(?P<port>\d{1,5})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class ConfigError(ValueError):
    """A configuration value is invalid. str(error) names the variable."""


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def env_float(
    env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = _parse_float(name, raw)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be between {minimum:g} and {maximum:g}, got {raw}")
    return value


def env_log_level(env: Mapping[str, str]) -> str:
    level = env_str(env, "LOG_LEVEL", "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    return env_int(env, name, default, 0, 65535)


def env_node_name(env: Mapping[str, str], default: str) -> str:
    name = env_str(env, "NODE_NAME", default)
    if not _NAME.match(name):
        raise ConfigError(f"NODE_NAME: use 1-64 letters, digits, '.', '_', ':' or '-', got {name!r}")
    return name


def check_tcp_endpoint(variable: str, endpoint: str) -> str:
    """Accept ``tcp://HOST:PORT`` (HOST may be ``*`` for a bind) and return it."""
    match = _TCP_ENDPOINT.match(endpoint)
    if not match or int(match["port"]) > 65535:
        raise ConfigError(f"{variable}: expected tcp://HOST:PORT, got {endpoint!r}")
    return endpoint


def check_name(variable: str, name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"{variable}: bad name {name!r}: use letters, digits, '.', '_', ':' or '-'")
    return name


@dataclass(frozen=True)
class DelayRange:
    """Seconds to hold back each replicated message: fixed, or uniform in [low, high]."""

    low: float = 0.0
    high: float = 0.0

    def draw(self) -> float:
        """One delay, drawn independently per message. Thread: any."""
        return self.low if self.low == self.high else random.uniform(self.low, self.high)

    def __bool__(self) -> bool:
        return self.high > 0

    def __str__(self) -> str:
        return f"{self.low:g}s" if self.low == self.high else f"{self.low:g}-{self.high:g}s"


def env_delay(env: Mapping[str, str], name: str, maximum: float = 3600.0) -> DelayRange:
    """Parse ``S`` or ``A-B`` (seconds, 0 <= A <= B <= maximum)."""
    raw = env.get(name, "").strip()
    if not raw:
        return DelayRange()
    low_raw, sep, high_raw = raw.partition("-")
    low = _parse_float(name, low_raw)
    high = _parse_float(name, high_raw) if sep else low
    if not 0 <= low <= high <= maximum:
        raise ConfigError(f"{name}: expected S or A-B seconds with 0 <= A <= B <= {maximum:g}, got {raw!r}")
    return DelayRange(low, high)


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}: expected a finite number, got {raw!r}")
    return value
