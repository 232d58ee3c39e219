"""The event seam: every committed status change and each task's progress, published
after commit and fanned out to subscribers (WebSocket, SSE, waiting API requests).

``bus``        in-process publication (called after commit; never blocks)
``records``    what travels: status changes, progress updates, their wire form
``sequencer``  releases status events in id order, filling gaps from the database
``stored``     history queries (replay, gap filling)
``subscriber`` one client's filter and bounded queue
``hub``        the fan-out in the serving process
"""
