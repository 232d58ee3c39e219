"""The event seam: every committed status change, each task's progress and each
pipeline's changes, published after commit and fanned out to subscribers (WebSocket,
SSE, waiting API requests).

``bus``        in-process publication (called after commit; never blocks)
``records``    what travels: status changes, progress updates, pipeline changes, their
               wire form
``sequencer``  releases status events in id order, filling gaps from the database
``stored``     history queries (replay, gap filling)
``subscriber`` one client's filter and bounded queue
``routes``     which subscribers hear a task's or a pipeline's events
``directory``  owner, type and pipeline of recent tasks, owners' names
``hub``        the fan-out in the serving process
"""
