"""Natural partitions: the clients are the groups the data came in (a subject, a speaker, a recording session).

:func:`group_partition` gives every sample of one group to one client. With as many clients as groups, client
``k`` holds the ``k``-th group in sorted order of the group ids. With fewer clients, whole groups are dealt
largest first, each to the client holding the fewest samples so far (ties: the lower client id), so no group is
split and the sizes stay as even as whole groups allow. More clients than groups is an error (a group cannot be
split without losing what makes the partition natural).
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_partition"]


def group_partition(groups: object, num_clients: int) -> list[np.ndarray]:
    """Sample indices per client (sorted int64 arrays), whole groups per client; see the module doc."""
    g = np.asarray(groups)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {list(g.shape)}")
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be an int >= 1, got {num_clients!r}")
    ids, inverse = np.unique(g, return_inverse=True)
    if num_clients > ids.size:
        raise ValueError(f"num_clients={num_clients} exceeds the {ids.size} groups in the data (a natural "
                         f"partition gives whole groups to clients); use num_clients <= {ids.size}")
    members = [np.flatnonzero(inverse == j) for j in range(ids.size)]
    if num_clients == ids.size:
        return [m.astype(np.int64) for m in members]
    order = sorted(range(ids.size), key=lambda j: (-members[j].size, j))
    held: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = [0] * num_clients
    for j in order:
        k = min(range(num_clients), key=lambda c: (sizes[c], c))
        held[k].append(members[j])
        sizes[k] += members[j].size
    return [np.sort(np.concatenate(h)).astype(np.int64) for h in held]
