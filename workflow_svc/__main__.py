"""``python -m workflow_svc``: run the workflow service."""

import asyncio

from workflow_svc.server import main

if __name__ == "__main__":
    asyncio.run(main())
