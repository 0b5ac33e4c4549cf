"""The server's end of same-host streams' shared-memory rings, one module per role.

- `file`: `Ring`, one mapped ring file and its release counts (`remove_stale_rings`
  deletes those of dead servers);
- `pool`: `RingPool`, rings kept between calls;
- `writer`: `RingWriter`, one call's use of a ring, a free slot per batch;
- `worker`: `Destination` and `MappedRings`, a stream worker's side: where it writes
  a batch, and writing it.

The layout, and the client's side, are `augserve.clients.ring`'s.
"""

from augserve.server.stream.ring.file import Ring, remove_stale_rings
from augserve.server.stream.ring.pool import RingPool
from augserve.server.stream.ring.worker import Destination, MappedRings
from augserve.server.stream.ring.writer import RingWriter

__all__ = ["Destination", "MappedRings", "Ring", "RingPool", "RingWriter", "remove_stale_rings"]
