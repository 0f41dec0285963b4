"""The appliance run for real by ``tests/test_stack.py``: a Docker engine of the test's own,
the images it runs (built locally, no image registry), and the stack made from a copy of the
checkout.

- ``engine``: starts ``dockerd`` on a data root of ours and stops it by its PID;
- ``images``: builds the base, agent and stand-in images (``python -m tests.stack.images``,
  run with network access before the tests cut it);
- ``appliance``: a copy of the checkout, its ``.env``, ``make`` and what the containers are.
"""
