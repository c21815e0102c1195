"""Pure AGI protocol functions (no I/O): see `ivr.agi.protocol`."""

from ivr.agi.protocol import (
    AgiEnvironment,
    AgiProtocolError,
    EnvironmentReader,
    EnvironmentTooLarge,
    GetDataResult,
    HangupNotice,
    ReplyParser,
    Response,
    build_command,
    get_data_result,
    key_from_result,
    parse_environment,
    parse_reply_line,
    raise_for_reply,
)

__all__ = [
    "AgiEnvironment",
    "AgiProtocolError",
    "EnvironmentReader",
    "EnvironmentTooLarge",
    "GetDataResult",
    "HangupNotice",
    "ReplyParser",
    "Response",
    "build_command",
    "get_data_result",
    "key_from_result",
    "parse_environment",
    "parse_reply_line",
    "raise_for_reply",
]
