"""``python -m registry_svc``: run the registry service."""

import asyncio

from registry_svc.server import main

if __name__ == "__main__":
    asyncio.run(main())
