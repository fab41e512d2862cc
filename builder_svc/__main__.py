"""``python -m builder_svc``: run the builder service."""

import asyncio

from builder_svc.server import main

if __name__ == "__main__":
    asyncio.run(main())
