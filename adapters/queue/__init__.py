"""The PostgreSQL turn queue (procrastinate): ingress enqueues turns, workers answer them.

- :mod:`adapters.queue.app`: the procrastinate ``App`` on chinwag's ``DATABASE_URL``;
- :mod:`adapters.queue.turns`: :class:`ProcrastinateTurnQueue`, the ``core.queue.TurnQueue``
  ingress puts turns into (one job per turn, locked by its conversation);
- :mod:`adapters.queue.runner`: :class:`QueueWorker`, a worker process's job loop, with the
  retry of turns whose worker died;
- :mod:`adapters.queue.stats`: what ``chinwag queue`` and ``/metrics`` show.

The schema is revision 0008 of the memory store's migrations (``chinwag db upgrade``).
"""
