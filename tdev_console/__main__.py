"""``python -m tdev_console``: the console as its own process (``tdev up`` runs it so); SIGTERM stops it."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from tdev_common.auth import AuthConfigError
from tdev_common.config import get_common_settings
from tdev_common.telemetry import configure_logging
from tdev_common.tls import TlsConfigError
from tdev_console.config import get_console_settings
from tdev_console.server import serve

log = structlog.get_logger("tdev_console")


async def main() -> int:
    """Serves until SIGTERM/SIGINT; 2 when the settings or the port do not allow starting."""
    common = get_common_settings()
    configure_logging("console", common.log_level, common.log_json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(common, get_console_settings(), lambda url: log.info("console_started", url=url), stop)
    except (AuthConfigError, TlsConfigError, OSError) as error:
        log.error("console_cannot_start", error=str(error))
        return 2
    log.info("console_stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
