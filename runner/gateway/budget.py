"""The session's `--max-cost` as a reservation: a request is admitted only with a worst-case estimate
of its cost set aside, and settled with what its usage says once it ends.

Checking the spend alone lets every request sent at once through while none has finished (41 of 41
were forwarded under a budget worth two). Here admission and reservation happen in one step under one
lock, so concurrent requests see each other's reservations:

- a request is refused once the settled spend has reached the cap;
- it is admitted when its estimate fits: spent + reserved + estimate <= cap;
- when it does not fit but others are in flight, it waits for them to settle and is judged again;
- alone (nothing reserved), it is admitted while the spend is under the cap, so a budget smaller than
  one request's worst case still lets the agent work one request at a time.

The bound: the spend passes the cap by at most one request's estimate (that of the last lone request).
A request whose usage never arrives (the client went away, the stream was cut) is charged its estimate.

Admission runs in the gateway's event loop; the supervisor reads the figures from its own thread.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Reservation:
    estimate_usd: float


class Budget:
    def __init__(self, cap_usd: float | None, spent_usd: float = 0.0) -> None:
        self.cap_usd = cap_usd
        self._spent = spent_usd
        self._reserved = 0.0
        self._in_flight = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._settled: asyncio.Event | None = None  # set (and replaced) whenever a reservation settles

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    @property
    def reserved_usd(self) -> float:
        with self._lock:
            return self._reserved

    @property
    def waiting(self) -> int:
        """Requests waiting for others to settle before they can be judged again."""
        with self._lock:
            return self._waiting

    def exhausted(self) -> bool:
        """The settled spend has reached the cap: no request will be admitted any more."""
        with self._lock:
            return self.cap_usd is not None and self._spent >= self.cap_usd

    def _try(self, estimate: float) -> Reservation | Literal["refused", "wait"]:
        with self._lock:
            cap = self.cap_usd
            if cap is not None:
                if self._spent >= cap:
                    return "refused"
                if self._in_flight and self._spent + self._reserved + estimate > cap:
                    return "wait"
            self._reserved += estimate
            self._in_flight += 1
            return Reservation(estimate)

    async def reserve(self, estimate_usd: float) -> Reservation | None:
        """Set `estimate_usd` aside for one request; None when the budget is spent. Call in the loop."""
        while (got := self._try(estimate_usd)) == "wait":
            if self._settled is None:
                self._settled = asyncio.Event()
            with self._lock:
                self._waiting += 1
            try:
                await self._settled.wait()
            finally:
                with self._lock:
                    self._waiting -= 1
        return None if got == "refused" else got

    def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """The request ended and cost `cost_usd`: release its reservation, add its cost. Call in the loop."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - reservation.estimate_usd)
            self._in_flight -= 1
            self._spent += cost_usd
        if self._settled is not None:
            self._settled.set()
            self._settled = None
