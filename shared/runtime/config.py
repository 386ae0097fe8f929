"""Settings read from the environment, each declared once.

A role's configuration is a frozen dataclass whose fields are declared with
``setting``: the variable, the text its default stands for, the parser (with
its limits) and a one-line meaning. ``read_settings`` parses the environment
(``os.environ`` in production, a plain dict in tests) from those declarations
and ``describe_settings`` writes the ``--help`` text from the same ones, so
the two cannot drift apart. ``NodeConfig`` declares the settings every role
has.

A parser takes the variable's name and its text, and returns the value or
raises ConfigError with a one-line message naming the variable. Parse once
at start, fail loudly. Pure functions; thread: any.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TypeVar

from shared.runtime.bearer import ApiToken
from shared.runtime.logging_setup import LOG_FORMATS

#: FSYNC's values: whether a commit waits for the disk.
FSYNC_MODES = {"always": True, "off": False}
_HOST_NAME = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\Z")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+\Z")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The longest REPLICATION_DELAY (or any delay) in seconds.
MAX_DELAY_S = 3600.0
_TCP_ENDPOINT = re.compile(r"^tcp://(?P<host>[^:/\s]+|\*):(?P<port>\d{1,5})\Z")
#: An absolute http(s) URL of a host (a name, IPv4, or [IPv6]), maybe a port and path.
_HTTP_URL = re.compile(r'^https?://([^\s/:?#@\[\]]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/[^\s?#"<>]*)?\Z')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
#: What an API token may hold: it travels in an HTTP header.
_TOKEN = re.compile(r"^[!-~]+\Z")
#: Keys of a dataclass field's metadata.
_SETTING = "setting"
_GROUP = "settings_group"

Parse = Callable[[str, str], Any]
Config = TypeVar("Config")


class ConfigError(ValueError):
    """A configuration value is invalid. str(error) names the variable."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, and how --help shows it."""

    variable: str
    #: The text an unset or empty variable stands for.
    default: str
    parse: Parse
    meaning: str
    #: Works out the default's text at start instead, from the values of the
    #: settings declared above it in the same dataclass (by field name).
    derive: Callable[[dict[str, Any]], str] | None = None
    #: How --help states a default that ``derive`` works out, or that the
    #: text alone does not say.
    shown_default: str = ""

    def read(self, env: Mapping[str, str], above: dict[str, Any]) -> Any:
        text = env.get(self.variable, "").strip()
        if not text:
            text = self.derive(above) if self.derive else self.default
        return self.parse(self.variable, text)

    @property
    def default_text(self) -> str:
        return self.shown_default or self.default or "empty"


def setting(
    variable: str,
    default: str,
    parse: Parse,
    meaning: str,
    *,
    derive: Callable[[dict[str, Any]], str] | None = None,
    shown_default: str = "",
) -> Any:
    """A config dataclass field read from ``variable``. Its value where a
    config is built without the environment is ``parse(default)``."""
    declared = Setting(variable, default, parse, meaning, derive, shown_default)
    return dataclasses.field(default=parse(variable, default), metadata={_SETTING: declared})


def settings_group(config_type: type) -> Any:
    """A config dataclass field holding another dataclass of settings."""
    return dataclasses.field(default_factory=config_type, metadata={_GROUP: config_type})


def read_settings(config_type: type[Config], env: Mapping[str, str]) -> Config:
    """Parse every declared setting of ``config_type`` from ``env``; the other
    fields keep their defaults."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config_type):
        if _GROUP in field.metadata:
            values[field.name] = read_settings(field.metadata[_GROUP], env)
        elif _SETTING in field.metadata:
            values[field.name] = field.metadata[_SETTING].read(env, values)
    return config_type(**values)


def declared_settings(config_type: type) -> Iterator[Setting]:
    """Every setting of ``config_type``, groups included, in declaration order."""
    for field in dataclasses.fields(config_type):
        if _GROUP in field.metadata:
            yield from declared_settings(field.metadata[_GROUP])
        elif _SETTING in field.metadata:
            yield field.metadata[_SETTING]


def describe_settings(config_type: type) -> str:
    """The settings as --help lists them: each variable with its default,
    then its meaning on the next line."""
    declared = list(declared_settings(config_type))
    width = max(len(d.variable) for d in declared) + 2
    lines = ["environment variables:"]
    for each in declared:
        lines.append(f"  {each.variable:<{width}}default: {each.default_text}")
        lines.append(f"      {each.meaning}")
    return "\n".join(lines)


# -- parsers ------------------------------------------------------------------


def text(_variable: str, raw: str) -> str:
    return raw


def whole_number(variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{variable}: expected an integer, got {raw!r}") from None


def integer(minimum: int, maximum: int) -> Parse:
    """Whole numbers in [minimum, maximum]."""
    return lambda variable, raw: check_between(variable, whole_number(variable, raw), minimum, maximum)


def check_between(variable: str, value: int, minimum: int, maximum: int) -> int:
    if not minimum <= value <= maximum:
        raise ConfigError(f"{variable}: must be between {minimum} and {maximum}, got {value}")
    return value


def number(minimum: float, maximum: float) -> Parse:
    """Finite decimal numbers in [minimum, maximum]."""

    def parse(variable: str, raw: str) -> float:
        value = _parse_float(variable, raw)
        if not minimum <= value <= maximum:
            raise ConfigError(f"{variable}: must be between {minimum:g} and {maximum:g}, got {raw}")
        return value

    return parse


def optional(parse: Parse) -> Parse:
    """``parse``, except that no text means None."""
    return lambda variable, raw: parse(variable, raw) if raw else None


port = integer(0, 65535)


def parse_log_level(variable: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{variable}: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level


def parse_log_format(variable: str, raw: str) -> str:
    log_format = raw.lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{variable}: expected {' or '.join(LOG_FORMATS)}, got {raw!r}")
    return log_format


def parse_node_name(variable: str, raw: str) -> str:
    if not _NAME.match(raw):
        raise ConfigError(f"{variable}: use 1-64 letters, digits, '.', '_', ':' or '-', got {raw!r}")
    return raw


#: The longest URL a node may announce: what its peers' frames take (shared.wire.frames).
MAX_URL_LENGTH = 256


def http_url(variable: str, url: str) -> str:
    """Accept an absolute ``http://`` or ``https://`` URL of a host, at most
    MAX_URL_LENGTH characters, and return it without a trailing slash; empty
    stays empty."""
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(f"{variable}: at most {MAX_URL_LENGTH} characters, got {len(url)}")
    if url and not _HTTP_URL.match(url):
        raise ConfigError(f"{variable}: expected http://HOST[:PORT][/PATH] or https://..., got {url!r}")
    return url.rstrip("/")


def named_endpoints(variable: str, raw: str, name_optional: bool) -> list[tuple[str, str]]:
    """``NAME=tcp://HOST:PORT,...`` as (name, endpoint) pairs, names unique; with
    ``name_optional``, an item without ``NAME=`` is called HOST:PORT."""
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, endpoint = item.rpartition("=")
        if not sep and not name_optional:
            raise ConfigError(f"{variable}: {item!r} must be NAME=tcp://HOST:PORT")
        endpoint = tcp_endpoint(variable, endpoint)
        pairs.append((parse_node_name(variable, name) if sep else endpoint.removeprefix("tcp://"), endpoint))
    names = [name for name, _ in pairs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{variable}: names must be unique, repeated: {', '.join(repeated)}")
    return pairs


def tcp_endpoint(variable: str, endpoint: str) -> str:
    """Accept ``tcp://HOST:PORT`` (HOST may be ``*`` for a bind) and return it."""
    match = _TCP_ENDPOINT.match(endpoint)
    if not match or int(match["port"]) > 65535:
        raise ConfigError(f"{variable}: expected tcp://HOST:PORT, got {endpoint!r}")
    return endpoint


@dataclass(frozen=True)
class DelayRange:
    """Seconds to hold back each replicated message: fixed, or uniform in [low, high]."""

    low: float = 0.0
    high: float = 0.0

    def draw(self, rng: random.Random) -> float:
        """One delay, drawn independently per message from ``rng`` (its owner's)."""
        return self.low if self.low == self.high else rng.uniform(self.low, self.high)

    def __bool__(self) -> bool:
        return self.high > 0

    def __str__(self) -> str:
        return f"{self.low:g}s" if self.low == self.high else f"{self.low:g}-{self.high:g}s"


def delay(variable: str, raw: str) -> DelayRange:
    """Parse ``S`` or ``A-B`` (seconds, 0 <= A <= B <= MAX_DELAY_S)."""
    low_raw, sep, high_raw = raw.partition("-")
    low = _parse_float(variable, low_raw)
    high = _parse_float(variable, high_raw) if sep else low
    if not 0 <= low <= high <= MAX_DELAY_S:
        raise ConfigError(
            f"{variable}: expected S or A-B seconds with 0 <= A <= B <= {MAX_DELAY_S:g}, got {raw!r}"
        )
    return DelayRange(low, high)


def _parse_float(variable: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{variable}: expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{variable}: expected a finite number, got {raw!r}")
    return value


def parse_host(variable: str, raw: str) -> str:
    """An IP address, or a host name; dotted numbers must be a real IPv4 address."""
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    if _HOST_NAME.match(raw) and not _DOTTED_NUMBERS.match(raw):
        return raw
    raise ConfigError(f"{variable}: expected an IP address or a host name, got {raw!r}")


def data_directory(variable: str, raw: str) -> str:
    """A directory the node can write, created if missing; empty stays empty."""
    if not raw:
        return raw
    if os.path.exists(raw) and not os.path.isdir(raw):
        raise ConfigError(f"{variable}: {raw!r} is not a directory")
    try:
        os.makedirs(raw, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot create {raw!r}: {exc.strerror}") from None
    if not os.path.isdir(raw):
        raise ConfigError(f"{variable}: {raw!r} is not a directory")
    if not os.access(raw, os.W_OK | os.X_OK):
        raise ConfigError(f"{variable}: {raw!r} is not writable")
    return raw


def api_token(variable: str, raw: str) -> ApiToken | None:
    """A bearer token; empty: none. An error never repeats the value."""
    if not raw:
        return None
    if not _TOKEN.match(raw):
        raise ConfigError(f"{variable}: use visible ASCII characters and no spaces "
                          "(the value is not shown)")
    return ApiToken(raw.encode("ascii"))


def api_token_file(variable: str, raw: str) -> ApiToken | None:
    """The token held in file ``raw`` (a Docker secret), without its line end."""
    if not raw:
        return None
    try:
        with open(raw, "rb") as file:
            content = file.read()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {raw!r}: {exc.strerror}") from None
    try:
        token = content.decode("ascii").strip()
    except UnicodeDecodeError:
        token = "\n"  # not ASCII: rejected below like a space
    if not token:
        raise ConfigError(f"{variable}: {raw!r} is empty")
    return api_token(f"{variable} ({raw!r})", token)


def parse_fsync(variable: str, raw: str) -> bool:
    if raw not in FSYNC_MODES:
        raise ConfigError(f"{variable}: expected always or off, got {raw!r}")
    return FSYNC_MODES[raw]


# -- the settings of every role -------------------------------------------------


@dataclass(frozen=True)
class NodeConfig:
    """What every role reads. A role's subclass adds its own settings, among
    them HTTP_THREADS and NODE_NAME, whose defaults differ by role."""

    http_host: str = setting("HTTP_HOST", "0.0.0.0", parse_host, "interface the HTTP API listens on")
    http_idle_timeout: float = setting(
        "HTTP_IDLE_TIMEOUT", "30", number(1.0, 86_400.0),
        "seconds an HTTP connection may stay silent (idle keep-alive, or a request "
        "not yet complete) before it is closed",
    )
    http_port: int = setting(
        "HTTP_PORT", "8000", port, "HTTP port; 0: any free port, announced in the log and PORT_FILE"
    )
    http_connection_limit: int = setting(
        "HTTP_CONNECTION_LIMIT", "1000", integer(1, 100_000),
        "open HTTP connections accepted at once, idle keep-alive ones included",
    )
    max_log_reads: int | None = setting(
        "MAX_LOG_READS", "", optional(integer(1, 100_000)),
        "whole-log GET /messages served at once (503 beyond), so that clients that never "
        "read cannot hold every HTTP thread",
        shown_default="¼ of HTTP_THREADS, at least 1",
    )
    log_level: str = setting(
        "LOG_LEVEL", "INFO", parse_log_level, f"one of {', '.join(LOG_LEVELS)}"
    )
    log_format: str = setting(
        "LOG_FORMAT", "text", parse_log_format,
        "text (coloured as colorlog colours) or json (one object per line: time, level, "
        "logger, thread, message, exception; never coloured)",
    )
    max_body_bytes: int = setting(
        "MAX_MESSAGE_BYTES", "1048576", integer(1, 1 << 30),
        "largest POST /messages body in bytes (413 beyond); on a secondary, it sizes the "
        "largest replication frame accepted",
    )
    data_dir: str = setting(
        "DATA_DIR", "", data_directory,
        "directory of the node's SQLite log; empty: the log is kept in memory only",
    )
    fsync: bool = setting(
        "FSYNC", "always", parse_fsync,
        "with DATA_DIR: always (a message counts as held once fsynced) or off (committed "
        "to the OS, not fsynced: a power cut may lose the last moments)",
    )
    port_file: str = setting(
        "PORT_FILE", "", text,
        'when set: once ready, write the addresses bound there, as JSON {"http": URL, ...}',
    )
    replication_keys_dir: str = setting(
        "REPLICATION_KEYS_DIR", "", text,
        "directory of CurveZMQ certificates (NAME.key, NAME.key_secret: python -m shared.keys); "
        "empty: replication is unauthenticated and unencrypted",
    )
    api_token: ApiToken | None = setting(
        "API_TOKEN", "", api_token,
        "when set: GET and POST /messages and GET /metrics need Authorization: Bearer <token> "
        "(401 without)",
    )
    api_token_file: ApiToken | None = setting(
        "API_TOKEN_FILE", "", api_token_file,
        "a file holding API_TOKEN, such as a Docker secret; set at most one of the two",
    )

    @property
    def bearer_token(self) -> ApiToken | None:
        """The HTTP API's token, from API_TOKEN or API_TOKEN_FILE; None: open."""
        return self.api_token or self.api_token_file

    max_waiting_reads: int | None = setting(
        "MAX_WAITING_READS", "", optional(integer(1, 100_000)),
        "tailing reads (GET /messages?from=N&wait=S) waiting at once (503 beyond)",
        shown_default="¼ of HTTP_THREADS, at least 1",
    )

    @property
    def log_read_slots(self) -> int:
        return self.max_log_reads or max(1, self.http_threads // 4)

    @property
    def waiting_read_slots(self) -> int:
        return self.max_waiting_reads or max(1, self.http_threads // 4)

    @classmethod
    def from_env(cls: type[Config], env: Mapping[str, str] = os.environ) -> Config:
        config = read_settings(cls, env)
        if config.api_token and config.api_token_file:
            raise ConfigError("API_TOKEN, API_TOKEN_FILE: set at most one of the two")
        return config


@dataclass(frozen=True)
class AppendingNodeConfig(NodeConfig):
    """What a node that takes appends reads besides: the fixed primary, and
    every failover node (any of which may be primary)."""

    http_threads: int = setting(
        "HTTP_THREADS", "64", integer(2, 4096),
        "Waitress worker threads; each append waiting for ACKs holds one",
    )
    #: Below http_threads, so reads and w=1 appends always find a thread.
    max_waiting_appends: int = setting(
        "MAX_WAITING_APPENDS", "48", whole_number,
        "appends with w > 1 allowed to wait for ACKs at once (503 beyond); below HTTP_THREADS",
        derive=lambda above: str(above["http_threads"] * 3 // 4),
        shown_default="¾ of HTTP_THREADS (48)",
    )
    max_batch_messages: int = setting(
        "MAX_BATCH_MESSAGES", "10000", integer(1, 1_000_000),
        "messages one batch append (\"messages\": [...]) may hold (413 beyond)",
    )
    idempotency_keys: int = setting(
        "IDEMPOTENCY_KEYS", "100000", integer(1, 10_000_000),
        "idempotency keys remembered (those of the most recent keyed appends)",
    )
    retention_messages: int = setting(
        "RETENTION_MESSAGES", "0", integer(0, 2**53),
        "keep about this many of the newest messages (at least, and at most a tenth more); "
        "older ones are dropped on every node; 0: keep everything",
    )
    retention_bytes: int = setting(
        "RETENTION_BYTES", "0", integer(0, 2**53),
        "keep about this many bytes of the newest messages (as JSON); 0: keep everything",
    )
    retention_seconds: float = setting(
        "RETENTION_SECONDS", "0", number(0.0, 1e10),
        "keep the messages of about the last this many seconds; 0: keep everything",
    )

    @classmethod
    def from_env(cls: type[Config], env: Mapping[str, str] = os.environ) -> Config:
        config = super().from_env(env)
        check_between("MAX_WAITING_APPENDS", config.max_waiting_appends, 1, config.http_threads - 1)
        return config
