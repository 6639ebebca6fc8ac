"""Byzantine-robust aggregation for Flower (flwr 1.42): every byzance rule as a Flower strategy.

Install with ``pip install 'byzance[flower]'``. ``import byzance`` never
imports Flower; this package does.

- :class:`RobustStrategy`: Flower's recommended Message API
  (``flwr.serverapp.strategy``, ``ArrayRecord``), for a ``ServerApp``.
- :class:`LegacyRobustStrategy`: the legacy API (``flwr.server.strategy``,
  ``Parameters``), for ``flwr.server.start_server`` and older code.
- :class:`RobustAggregator`: the Flower-free core, lists of numpy arrays in
  and out.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "byzance.flower needs Flower: pip install 'byzance[flower]' (flwr==1.42.0)."
    ) from err

from byzance.flower.aggregation import Layout, RobustAggregator, RoundReport
from byzance.flower.legacy import LegacyRobustStrategy
from byzance.flower.strategy import RobustStrategy

__all__ = ["Layout", "LegacyRobustStrategy", "RobustAggregator", "RobustStrategy", "RoundReport"]
