"""What every benchmark reports (a run's throughput and latency percentiles), and a free port."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class Result:
    """One measured run.

    Attributes:
        bot: which bot or configuration ran ("floor", "chinwag", ...).
        users: concurrent users.
        messages: messages answered.
        seconds: wall time of the run.
        latencies: per-message times in seconds.
    """

    bot: str
    users: int
    messages: int
    seconds: float
    latencies: list[float] = field(repr=False)
    first_ms: float = 0.0  # the worst latency of the warm-up, when kept apart

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0 to 1) of the latencies, in milliseconds (nearest rank)."""
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
        return ordered[index] * 1000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
