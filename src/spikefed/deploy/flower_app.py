"""The Flower app objects (``[tool.flwr.app.components]`` in pyproject.toml point here).

Thin shells: the ServerApp calls :func:`spikefed.deploy.flower.server_main`, the ClientApp answers the
server's QUERY (node config) and TRAIN (local round) messages with :func:`~spikefed.deploy.flower.client_query`
and :func:`~spikefed.deploy.flower.client_train` (a cohort of virtual clients:
:func:`~spikefed.deploy.flower_cohort.client_cohort_train`). TRAIN messages of Flower's SecAgg+ protocol go through
``secaggplus_mod`` (see :mod:`spikefed.deploy.flower_secagg`).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .flower import client_query, client_train, server_main
from .flower_cohort import client_cohort_train, is_cohort_message
from .flower_secagg import client_secagg_train, secagg_mod

server_app = ServerApp()
client_app = ClientApp(mods=[secagg_mod])


@server_app.main()
def _server(grid: Grid, context: Context) -> None:
    server_main(grid, context)


@client_app.query()
def _query(msg: Message, context: Context) -> Message:
    return Message(client_query(context.run_config, context.node_config), reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    if client_secagg_train.handles(msg):
        return Message(client_secagg_train(msg.content, context.run_config, context.node_config), reply_to=msg)
    if is_cohort_message(msg.content):  # a node that hosts a cohort of virtual clients (flower_cohort)
        return Message(client_cohort_train(msg.content, context.run_config, context.node_config, context.state),
                       reply_to=msg)
    return Message(client_train(msg.content, context.run_config, context.node_config, context.state), reply_to=msg)
