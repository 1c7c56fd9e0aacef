"""Health checks and Prometheus metrics: the ``CHINWAG_HTTP_LISTEN`` listener.

:class:`HealthServer` (asyncio only) answers ``/healthz``, ``/readyz`` and ``/metrics``;
:class:`PrometheusTelemetry` implements ``core.telemetry.Telemetry`` with
``prometheus-client`` on its own registry and tells readiness whether the LLM backend was
reachable recently.
"""

from adapters.observability.http import HealthServer, Readiness
from adapters.observability.metrics import PrometheusTelemetry

__all__ = ["HealthServer", "PrometheusTelemetry", "Readiness"]
