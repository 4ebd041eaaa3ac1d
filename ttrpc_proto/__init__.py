"""ttrpc for Python: a sans-IO protocol core, trio adapters and the containerd API types.

Layers, bottom up (each module imports only those below it):

* ``status`` — ``Code`` and ``TtrpcError`` (re-exported here);
* ``frame``, ``events``, ``protocol`` — the sans-IO core: ``Connection(Role.CLIENT|SERVER)`` is fed
  bytes and yields ``Request``/``Response``/``Data``/``PeerError``/``ConnectionClosed`` events;
* ``outbox`` and ``exchange`` — one connection's writer task and reader loop, shared by
  ``client`` (``connect_unix``, ``open_client``, ``Client.call``) and ``server`` (``Server``,
  ``CallContext``) — the trio adapters;
* ``api`` — generated protobuf modules; ``typeurl`` — Any with containerd's bare type URLs;
* ``cli`` — ``railcar-ttrpc call ADDRESS SERVICE METHOD [JSON]``; ``regen`` — rebuilds ``api``.

Importing this package stays light (no trio, no protobuf) so the shim's ``start`` path can use
``Code``/``TtrpcError`` for free; the submodules pull those in only when imported.
"""

from .status import Code, TtrpcError

__all__ = ["Code", "TtrpcError"]
