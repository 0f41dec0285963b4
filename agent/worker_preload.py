"""What the fork server imports once, before it forks any worker (``agent.worker_processes``).

Importing it loads everything a worker runs, then freezes those objects: the garbage
collector in a worker then never walks them, and so never writes to (and copies) the pages
the workers share.
"""

import gc

from loguru import logger

logger.remove()  # Pipecat logs as it is imported; each worker sets up its own logging

import agent.worker  # noqa: E402, F401

gc.collect()
gc.freeze()
