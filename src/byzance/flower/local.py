"""Run a Flower strategy against ClientApps in one process, without Ray or a SuperLink.

:class:`InProcessGrid` is a :class:`flwr.serverapp.Grid` that hands each
message to a :class:`flwr.clientapp.ClientApp` in the same process and
returns its reply, exactly as the deployment runtime would deliver it (a
ClientApp that raises becomes an error reply). It serves tests, debugging and
small experiments: ``strategy.start(grid=InProcessGrid(client_app, 10), ...)``.
For real deployments use Flower's SuperLink and SuperNodes; for large
simulations, Flower's simulation engine (``flwr[simulation]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

# The code Flower's runtime gives a reply whose ClientApp raised.
CLIENT_APP_RAISED_EXCEPTION = 1
FIRST_NODE_ID = 100


class InProcessGrid(Grid):
    """A Grid of ``num_nodes`` nodes that each run ``client_app`` in this process.

    Args:
        client_app: the ClientApp every node runs, or a function from the
            node's index (0..num_nodes-1) to the ClientApp it runs (e.g. to
            make some nodes Byzantine).
        num_nodes: how many nodes are connected.
        node_config: a function from the node's index to its node config
            (``context.node_config``), e.g. ``{"partition-id": i}``.
        run_config: the run config every ClientApp sees (``context.run_config``).

    Node i (0-based) has node id ``FIRST_NODE_ID + i``; each node keeps its
    ``context.state`` across rounds, as a SuperNode does. Like Flower's
    ServerApp runtime, the grid sets this process's task identity (run id,
    the SuperLink's node id), which Flower's ``Message`` needs.
    """

    def __init__(
        self,
        client_app: ClientApp | Callable[[int], ClientApp],
        num_nodes: int,
        *,
        node_config: Callable[[int], Mapping[str, int | float | str | bool]] | None = None,
        run_config: Mapping[str, int | float | str | bool] | None = None,
        run_id: int = 1,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"InProcessGrid needs at least one node; got num_nodes={num_nodes}.")
        app_of = client_app if not isinstance(client_app, ClientApp) else (lambda _: client_app)
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self._run = Run.create_empty(run_id)
        self._apps = {FIRST_NODE_ID + i: app_of(i) for i in range(num_nodes)}
        self._contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config=dict(node_config(i)) if node_config else {},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        self._ids = (str(i) for i in itertools.count(1))
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in self._apps:
                raise ValueError(f"no node {node} in this grid (nodes: {sorted(self._apps)}).")
            message_id = next(self._ids)
            try:
                reply = self._apps[node](msg, self._contexts[node])
            except Exception as err:  # what the runtime does with a raising ClientApp
                reply = Message(
                    Error(CLIENT_APP_RAISED_EXCEPTION, f"{type(err).__name__}: {err}"),
                    reply_to=msg,
                )
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
