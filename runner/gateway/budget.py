"""A session's budget (`--max-cost` in dollars, `--max-tokens` in tokens) as a reservation: a request is
admitted only with a worst-case estimate of what it uses set aside, and settled with what its usage says
once it ends. The amounts are in the budget's own unit; the gateway keeps one budget per unit.

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
    estimate: float


class Budget:
    def __init__(self, cap: float | None, spent: float = 0.0) -> None:
        self.cap = cap
        self._spent = spent
        self._reserved = 0.0
        self._in_flight = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._settled: asyncio.Event | None = None  # set (and replaced) whenever a reservation settles

    @property
    def spent(self) -> float:
        with self._lock:
            return self._spent

    @property
    def reserved(self) -> float:
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
            return self.cap is not None and self._spent >= self.cap

    def _try(self, estimate: float) -> Reservation | Literal["refused", "wait"]:
        with self._lock:
            cap = self.cap
            if cap is not None:
                if self._spent >= cap:
                    return "refused"
                if self._in_flight and self._spent + self._reserved + estimate > cap:
                    return "wait"
            self._reserved += estimate
            self._in_flight += 1
            return Reservation(estimate)

    async def reserve(self, estimate: float) -> Reservation | None:
        """Set `estimate` aside for one request; None when the budget is spent. Call in the loop."""
        while (got := self._try(estimate)) == "wait":
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

    def settle(self, reservation: Reservation, used: float) -> None:
        """The request ended and used `used`: release its reservation, add what it used. Call in the loop."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - reservation.estimate)
            self._in_flight -= 1
            self._spent += used
        if self._settled is not None:
            self._settled.set()
            self._settled = None
