"""ZooKeeper driver code for the ZooKeeper backend, on top of aiozk.

* :mod:`.options`: the shape of an aiozk client, the option records, the client from a URL.
* :mod:`.link`: :class:`~.link.Link`, one-shot requests with a timeout, the credentials
  on every connection, the redaction of aiozk's payload log, the session's state.
* :mod:`.session`: :class:`~.session.SessionKeeper`, which follows the session for the
  leases riding on it (at risk, lost, replaced, probed).
* :mod:`.requests`: the requests the backend builds (container create included).
* :mod:`.names`: lock names as path segments, Curator's lock-node names.
* :mod:`.errors`: the driver-error table and the answers read as replies.

The names below are the ones the backend uses as ``zk.<name>`` (and tests import).
"""

from __future__ import annotations

from .errors import NodeExists as NodeExists
from .errors import NoNode as NoNode
from .errors import ResponseError as ResponseError
from .errors import driver_error as driver_error
from .names import decode_name as decode_name
from .names import encode_name as encode_name
from .names import lock_nodes as lock_nodes
from .names import node_prefix as node_prefix
from .names import owner_of as owner_of
from .options import client_from_url as client_from_url
from .requests import check as check
from .requests import children as children
from .requests import create_container as create_container
from .requests import create_node as create_node
from .requests import delete as delete
from .requests import exists as exists
from .requests import get_data as get_data
from .requests import multi as multi
from .requests import persistent as persistent
from .requests import set_data as set_data
from .requests import sync as sync
