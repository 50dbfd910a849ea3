"""Running the embarrassingly parallel parts on a Dask cluster.

``simulate_power`` and ``multiverse`` take ``backend="dask"`` and an optional
``dask.distributed`` ``client``; :func:`dask_client` gives them that client, or a
local cluster of worker processes that it closes afterwards.

Examples
--------
A client you already have (e.g. ``Client("scheduler:8786")``) is passed through
unchanged; without one, a local cluster is started and closed:

>>> with dask_client("an existing client") as client:
...     client
'an existing client'
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def dask_client(client=None, workers: int = 2):
    """Yield ``client`` as it is, or a client of a new local cluster of ``workers``
    single-threaded processes (no dashboard), closed on exit."""
    if client is not None:
        yield client
        return
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    own = Client(cluster)
    try:
        yield own
    finally:
        own.close()
        cluster.close()
