"""``python -m evolution_svc``: run the evolution service."""

import asyncio

from evolution_svc.server import main

if __name__ == "__main__":
    asyncio.run(main())
