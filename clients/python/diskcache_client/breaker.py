"""Circuit breaker: fail fast while a server is known to be unreachable.

When a request to a server fails at the connection level (after its
retries) or times out, the server is marked down for ``cooldown`` seconds
and every call to it fails at once with
:class:`~diskcache_client.errors.ServerUnavailable`, without touching the
network. After the cool-down one call probes the server; its success closes
the breaker, its failure opens it again.
"""

import threading
import time


class CircuitBreaker:
    """Fail fast for ``cooldown`` seconds after a connection failure.

    ``clock`` is a monotonic clock (tests may replace it). A ``cooldown`` of
    0 disables the breaker. While the breaker is closed, :meth:`allow` and
    :meth:`success` read one attribute and take no lock.
    """

    def __init__(self, cooldown, clock=time.monotonic):
        self.cooldown = cooldown
        self.clock = clock
        self.trips = 0
        self._lock = threading.Lock()
        self._open_until = None
        self._probing = False

    @property
    def state(self):
        with self._lock:
            if self._open_until is None:
                return 'closed'
            if self._probing or self.clock() >= self._open_until:
                return 'half-open'
            return 'open'

    def allow(self):
        """Whether a call may go to the server now."""
        if self._open_until is None or self.cooldown <= 0:
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._probing or self.clock() < self._open_until:
                return False
            self._probing = True  # this caller probes
            return True

    def success(self):
        if self._open_until is None and not self._probing:
            return
        with self._lock:
            self._open_until = None
            self._probing = False

    def failure(self):
        with self._lock:
            self._open_until = self.clock() + self.cooldown
            self._probing = False
            self.trips += 1

    def abandon(self):
        """A call ended without telling whether the server is up."""
        if not self._probing:
            return
        with self._lock:
            self._probing = False

    def reset(self):
        self.success()
