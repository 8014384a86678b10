"""Per-client state for very large populations: one compact array per state kind.

State that lives on a client between rounds (the error-feedback residual, the DGC velocity, the SCAFFOLD control
variate: one tensor per model parameter; a few small plain values such as the continual task it holds) used to be a
Python dict per client holding a dict of tensors. At 100,000 clients that is millions of Python objects.
:class:`ClientStateStore` keeps each *tensor kind* as rows of one array ``[rows, D]`` (``D`` = the number of
model parameters, the dtype of the first write; the row is the parameters flattened in the model's order), with an
index ``client -> row`` (one ``int64`` per client of the federation). Rows are allocated on a client's first write.
It behaves as the old ``dict[int, dict[str, Any]]`` (``store.setdefault(k, {})[kind] = params``,
``store.get(k, {}).get(kind)``, ``k in store``, iteration over the clients holding state): reads return fresh
tensors, bit-identical to what was written.

Storage, with its memory bound (``R_k`` = clients that ever held state of kind ``k``, ``b`` = bytes per value):

- **memory** (the default): one numpy array per kind, grown by doubling: at most ``2 R_k D b`` bytes per kind,
  plus ``8 N`` bytes of index per kind for ``N`` clients;
- **file** (once the rows of all kinds would exceed ``memory_limit`` bytes and a directory is set, e.g. the run
  directory's ``client_state/``; ``memory_limit=0``: from the first write): ``<directory>/<kind>.bin``, read and
  written row by row with positional I/O (``os.pread``/``os.pwrite``), not mapped into the process: resident
  memory holds only the rows being used (the kernel's page cache may keep file pages; it is not the process's and
  is reclaimed under pressure). The file holds at most ``R_k + W_k`` rows (``W_k``: rows written during the
  largest round), because a row a checkpoint references is never overwritten: a write goes to a free row
  (copy on write) and the old row becomes free only once the next checkpoint is on disk.

Checkpoints (:meth:`checkpoint_tree`, :meth:`ClientStateStore.from_tree`): the store is one node of the
checkpoint's state tree. In memory mode the tree holds, per kind, the clients as one ``int64`` tensor and their
rows as one ``[R, D]`` tensor; in file mode it holds the clients, their row numbers and a CRC-32 per row, and the
file is verified row by row when the checkpoint is loaded (so a checkpoint of 100,000 clients does not copy
gigabytes every round: only the rows written since the last checkpoint are new, and they are fsynced first).
Every field is checked against the model's layout before use; nothing is unpickled.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_MEMORY_LIMIT", "STATE_DIR", "TENSOR_KINDS", "ClientEntry", "ClientStateStore"]

#: per-client entries that hold one tensor per model parameter (stored as rows)
TENSOR_KINDS = ("scaffold_control", "ef_residual", "dgc_velocity")
#: rows of all kinds kept in memory up to this many bytes (then the file, where a directory is set)
DEFAULT_MEMORY_LIMIT = 256 * 2**20
#: the store's folder next to a checkpoint (inside the run directory)
STATE_DIR = "client_state"
_FORMAT = "compact-1"
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
_CHUNK_ROWS = 256


class _Rows:
    """Rows ``[*, D]`` of one kind, in memory (numpy) or in a file; ``slot[client]`` is the client's row or -1."""

    def __init__(self, num_clients: int, names: list[str], shapes: list[tuple[int, ...]], dtype: torch.dtype) -> None:
        self.names, self.shapes, self.dtype = names, shapes, dtype
        self.np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        self.sizes = [int(np.prod(s)) for s in shapes]
        self.width = sum(self.sizes)
        self.row_bytes = self.width * self.np_dtype.itemsize
        self.slot = np.full(num_clients, -1, dtype=np.int64)
        self.count = 0  # clients holding a row
        self.data: np.ndarray | None = np.empty((0, self.width), dtype=self.np_dtype)  # memory mode
        self.fd: int | None = None  # file mode
        self.path: Path | None = None
        self.used = 0  # file: rows in the file
        self.crc = np.zeros(0, dtype=np.int64)  # file: CRC-32 of each row as last written
        self.fresh = np.zeros(0, dtype=bool)  # file: row written since the last checkpoint (may be overwritten)
        self.free: list[int] = []  # file: rows no checkpoint references
        self.pending: list[int] = []  # file: rows superseded since the last checkpoint

    @property
    def resident_bytes(self) -> int:
        return 0 if self.data is None else self.data.nbytes

    def flat(self, client: int, params: Mapping[str, torch.Tensor]) -> np.ndarray:
        if list(params) != self.names:
            raise ValueError(f"client {client}: state names {list(params)[:4]} do not match the model's "
                             f"{self.names[:4]}")
        parts = []
        for n, shape in zip(self.names, self.shapes):
            t = params[n]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != self.dtype:
                raise ValueError(f"client {client}: state [{n!r}] is not a {self.dtype} tensor of shape {shape}")
            parts.append(t.detach().reshape(-1))
        return torch.cat(parts).numpy() if parts else np.zeros(0, dtype=self.np_dtype)

    def unflat(self, row: np.ndarray) -> dict[str, torch.Tensor]:
        t = torch.from_numpy(row)
        out, pos = {}, 0
        for n, shape, size in zip(self.names, self.shapes, self.sizes):
            out[n] = t[pos:pos + size].view(shape)
            pos += size
        return out

    # -- rows ----------------------------------------------------------------------------------------------------
    def read(self, s: int) -> np.ndarray:
        if self.data is not None:
            return self.data[s].copy()
        assert self.fd is not None
        raw = os.pread(self.fd, self.row_bytes, s * self.row_bytes)
        if len(raw) != self.row_bytes:
            raise ValueError(f"client state file {self.path}: row {s} is truncated")
        return np.frombuffer(raw, dtype=self.np_dtype).copy()

    def write(self, client: int, row: np.ndarray) -> None:
        s = int(self.slot[client])
        if self.data is not None:
            if s < 0:
                s = self.count
                if s == len(self.data):
                    grown = np.empty((min(max(2 * s, 8), len(self.slot)), self.width), dtype=self.np_dtype)
                    grown[:s] = self.data
                    self.data = grown
                self.slot[client] = s
                self.count += 1
            self.data[s] = row
            return
        if s < 0 or not self.fresh[s]:  # copy on write: a row a checkpoint may reference is never overwritten
            if s >= 0:
                self.pending.append(s)
            else:
                self.count += 1
            s = self.free.pop() if self.free else self._append()
            self.slot[client] = s
        self._put(s, row)

    def _append(self) -> int:
        s = self.used
        self.used += 1
        if s == len(self.crc):
            n = max(2 * s, 8)
            self.crc = np.resize(self.crc, n)
            self.fresh = np.concatenate([self.fresh, np.zeros(n - len(self.fresh), dtype=bool)])
        return s

    def _put(self, s: int, row: np.ndarray) -> None:
        assert self.fd is not None
        raw = np.ascontiguousarray(row, dtype=self.np_dtype).tobytes()
        os.pwrite(self.fd, raw, s * self.row_bytes)
        self.crc[s] = zlib.crc32(raw)
        self.fresh[s] = True

    def drop(self, client: int) -> None:
        s = int(self.slot[client])
        if s < 0:
            return
        self.slot[client] = -1
        self.count -= 1
        if self.data is not None:  # move the last row into the hole
            last = self.count
            if s != last:
                mover = int(np.flatnonzero(self.slot == last)[0])
                self.data[s] = self.data[last]
                self.slot[mover] = s
        elif self.fresh[s]:
            self.fresh[s] = False
            self.free.append(s)
        else:
            self.pending.append(s)

    # -- the file ------------------------------------------------------------------------------------------------
    def to_file(self, path: Path) -> None:
        """Move the rows into a new file ``path`` (memory mode -> file mode)."""
        assert self.data is not None
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        data, self.data = self.data, None
        holders = np.flatnonzero(self.slot >= 0)
        for c in holders:
            s = self._append()
            self._put(s, data[self.slot[c]])
            self.slot[c] = s

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ClientEntry(MutableMapping[str, Any]):
    """One client's state, a view into the store: tensor kinds read and write rows, other keys plain values."""

    def __init__(self, store: ClientStateStore, client: int) -> None:
        self.store, self.client = store, client

    def __getitem__(self, key: str) -> Any:
        return self.store.get_value(self.client, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.store.set_value(self.client, key, value)

    def __delitem__(self, key: str) -> None:
        self.store.delete_value(self.client, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.keys_of(self.client))

    def __len__(self) -> int:
        return len(self.store.keys_of(self.client))

    def __repr__(self) -> str:
        return f"ClientEntry(client={self.client}, keys={self.store.keys_of(self.client)})"


class ClientStateStore(MutableMapping[int, ClientEntry]):
    """Per-client state of ``num_clients`` clients of a model with parameters ``layout`` (name -> shape), compact
    (see the module docstring). ``directory``: where the rows go once they exceed ``memory_limit`` bytes (``None``:
    they stay in memory)."""

    def __init__(self, num_clients: int, layout: Mapping[str, tuple[int, ...]], directory: Path | str | None = None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        if num_clients < 1:
            raise ValueError(f"a client state store needs at least one client, got {num_clients}")
        if memory_limit < 0:
            raise ValueError(f"memory_limit must be >= 0 bytes, got {memory_limit}")
        self.num_clients = num_clients
        self.layout = {n: tuple(int(d) for d in s) for n, s in layout.items()}
        self.directory = Path(directory) if directory is not None else None
        self.memory_limit = memory_limit
        self.kinds: dict[str, _Rows] = {}
        self.extras: dict[int, dict[str, Any]] = {}  # plain (non-tensor) entries, by client

    # -- mapping of clients --------------------------------------------------------------------------------------
    def _check_client(self, client: Any) -> int:
        if isinstance(client, bool) or not isinstance(client, (int, np.integer)) or \
                not 0 <= client < self.num_clients:
            raise KeyError(client)
        return int(client)

    def __contains__(self, client: object) -> bool:
        try:
            return bool(self.keys_of(self._check_client(client)))
        except KeyError:
            return False

    def __getitem__(self, client: int) -> ClientEntry:
        if client not in self:
            raise KeyError(client)
        return ClientEntry(self, int(client))

    def __setitem__(self, client: int, value: Mapping[str, Any]) -> None:
        c = self._check_client(client)
        entry = ClientEntry(self, c)
        for key in list(entry):
            del entry[key]
        for key, v in value.items():
            entry[key] = v

    def __delitem__(self, client: int) -> None:
        if client not in self:
            raise KeyError(client)
        for key in list(self.keys_of(int(client))):
            self.delete_value(int(client), key)

    def setdefault(self, client: int, default: Any = None) -> ClientEntry:  # type: ignore[override]
        """The client's entry (a view: writes go to the store), filled from ``default`` if it held nothing."""
        c = self._check_client(client)
        if c not in self and default:
            self[c] = default
        return ClientEntry(self, c)

    def __iter__(self) -> Iterator[int]:
        holders = set(self.extras)
        for rows in self.kinds.values():
            holders.update(np.flatnonzero(rows.slot >= 0).tolist())
        return iter(sorted(holders))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- one client's values -------------------------------------------------------------------------------------
    def keys_of(self, client: int) -> list[str]:
        keys = [k for k, rows in self.kinds.items() if rows.slot[client] >= 0]
        return keys + list(self.extras.get(client, {}))

    def get_value(self, client: int, key: str) -> Any:
        rows = self.kinds.get(key)
        if rows is not None and rows.slot[client] >= 0:
            return rows.unflat(rows.read(int(rows.slot[client])))
        if key in self.extras.get(client, {}):
            return self.extras[client][key]
        raise KeyError(key)

    def set_value(self, client: int, key: str, value: Any) -> None:
        if key not in TENSOR_KINDS:
            self.extras.setdefault(client, {})[key] = value
            return
        if not isinstance(value, Mapping):
            raise ValueError(f"client {client}: {key} must be a dict of tensors, got {type(value).__name__}")
        rows = self.kinds.get(key)
        if rows is None:
            first = next(iter(value.values()), None)
            dtype = first.dtype if isinstance(first, torch.Tensor) else torch.float32
            if dtype not in _DTYPES.values():
                raise ValueError(f"client {client}: {key} has dtype {dtype}; the store holds float16/32/64")
            rows = self.kinds[key] = _Rows(self.num_clients, list(self.layout), list(self.layout.values()), dtype)
        rows.write(client, rows.flat(client, value))
        self._maybe_spill()

    def delete_value(self, client: int, key: str) -> None:
        rows = self.kinds.get(key)
        if rows is not None and rows.slot[client] >= 0:
            rows.drop(client)
        elif key in self.extras.get(client, {}):
            del self.extras[client][key]
            if not self.extras[client]:
                del self.extras[client]
        else:
            raise KeyError(key)

    # -- storage -------------------------------------------------------------------------------------------------
    @property
    def in_file(self) -> bool:
        return any(r.fd is not None for r in self.kinds.values())

    @property
    def resident_bytes(self) -> int:
        """Bytes of rows held in this process's memory (memory mode; 0 in file mode)."""
        return sum(r.resident_bytes for r in self.kinds.values())

    def _maybe_spill(self) -> None:
        if self.directory is None:
            return
        for kind, rows in self.kinds.items():
            if rows.data is not None and (self.in_file or self.resident_bytes > self.memory_limit
                                          or self.memory_limit == 0):
                self.directory.mkdir(parents=True, exist_ok=True)
                rows.to_file(self.directory / f"{kind}.bin")

    def set_directory(self, directory: Path | str, memory_limit: int | None = None) -> None:
        """Where the rows go above the memory limit (e.g. ``<run dir>/client_state``)."""
        if self.in_file and Path(directory) != self.directory:
            raise ValueError(f"the client state already lives in {self.directory}")
        self.directory = Path(directory)
        if memory_limit is not None:
            if memory_limit < 0:
                raise ValueError(f"memory_limit must be >= 0 bytes, got {memory_limit}")
            self.memory_limit = memory_limit
        self._maybe_spill()

    def close(self) -> None:
        for rows in self.kinds.values():
            rows.close()

    def as_dict(self) -> dict[int, dict[str, Any]]:
        """The plain form ``{client: {key: value}}`` (tests, small populations)."""
        return {c: dict(self[c]) for c in self}

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint_tree(self, checkpoint_dir: Path | str | None = None) -> dict[str, Any]:
        """The store as a checkpoint node. File mode with ``checkpoint_dir / STATE_DIR`` as the directory: the
        rows stay in the files (fsynced now) and the node references them; otherwise the rows are copied in."""
        refer = self.in_file and checkpoint_dir is not None and \
            self.directory == Path(checkpoint_dir) / STATE_DIR
        kinds: dict[str, Any] = {}
        for kind, rows in self.kinds.items():
            holders = np.flatnonzero(rows.slot >= 0)
            node: dict[str, Any] = {"dtype": str(rows.dtype).removeprefix("torch."),
                                    "clients": torch.from_numpy(holders.astype(np.int64))}
            if refer:
                assert rows.fd is not None
                os.fsync(rows.fd)
                slots = rows.slot[holders]
                node.update({"file": f"{kind}.bin", "rows": torch.from_numpy(slots.copy()),
                             "crc": torch.from_numpy(rows.crc[slots].copy())})
            elif rows.data is not None:
                node["values"] = torch.from_numpy(rows.data[rows.slot[holders]])
            else:
                data = np.stack([rows.read(int(s)) for s in rows.slot[holders]]) if len(holders) else \
                    np.zeros((0, rows.width), dtype=rows.np_dtype)
                node["values"] = torch.from_numpy(data)
            kinds[kind] = node
        return {"format": _FORMAT, "kinds": kinds,
                "extras": {c: dict(v) for c, v in sorted(self.extras.items())}}

    def committed(self) -> None:
        """The checkpoint referencing the files is on disk: rows superseded before it are free now."""
        for rows in self.kinds.values():
            if rows.fd is not None:
                rows.free.extend(rows.pending)
                rows.pending.clear()
                rows.fresh[:] = False

    @classmethod
    def from_tree(cls, tree: Any, num_clients: int, layout: Mapping[str, tuple[int, ...]],
                  checkpoint_dir: Path | str | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT
                  ) -> ClientStateStore:
        """A store from a checkpoint node (:meth:`checkpoint_tree`, or the older ``{client: {key: value}}``),
        checked against ``num_clients`` and the model ``layout``; ``ValueError`` naming the field on any
        mismatch (a referenced file: its size and every row's CRC-32)."""
        directory = Path(checkpoint_dir) / STATE_DIR if checkpoint_dir is not None else None
        store = cls(num_clients, layout, directory, memory_limit)
        if not isinstance(tree, dict):
            raise ValueError("client_state is not a dict")
        if tree.get("format") != _FORMAT:
            store._load_plain(tree)
            return store
        if set(tree) != {"format", "kinds", "extras"} or not isinstance(tree["kinds"], dict) or \
                not isinstance(tree["extras"], dict):
            raise ValueError("client_state must hold exactly format, kinds and extras (dicts)")
        for c, extra in tree["extras"].items():
            store._client_id(c, "extras")
            if not isinstance(extra, dict) or any(k in TENSOR_KINDS or not isinstance(k, str) for k in extra):
                raise ValueError(f"client_state extras[{c}] must map plain keys to values")
            store.extras[c] = dict(extra)
        try:
            for kind, node in tree["kinds"].items():
                store._load_kind(kind, node)
        except BaseException:
            store.close()
            raise
        return store

    def _client_id(self, c: Any, where: str) -> int:
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_clients:
            raise ValueError(f"client_state {where} names client {c!r}, outside 0..{self.num_clients - 1}")
        return c

    def _load_plain(self, tree: dict[Any, Any]) -> None:
        for c, held in tree.items():
            self._client_id(c, "(plain form)")
            if not isinstance(held, dict):
                raise ValueError(f"client_state[{c}] is not a dict")
            for key, value in held.items():
                if key in TENSOR_KINDS:
                    if not isinstance(value, dict) or list(value) != list(self.layout) or any(
                            not isinstance(t, torch.Tensor) or tuple(t.shape) != self.layout[n]
                            for n, t in value.items()):
                        raise ValueError(f"client_state[{c}][{key!r}] does not fit the model's parameters")
                try:
                    self.set_value(c, key, value)
                except ValueError as e:
                    raise ValueError(f"client_state[{c}][{key!r}]: {e}") from None

    def _load_kind(self, kind: Any, node: Any) -> None:
        where = f"client_state kinds[{kind!r}]"
        if kind not in TENSOR_KINDS:
            raise ValueError(f"{where}: unknown kind (known: {list(TENSOR_KINDS)})")
        if not isinstance(node, dict) or node.get("dtype") not in _DTYPES:
            raise ValueError(f"{where}: dtype must be one of {list(_DTYPES)}")
        referenced = "file" in node
        expected = {"dtype", "clients", "file", "rows", "crc"} if referenced else {"dtype", "clients", "values"}
        if set(node) != expected:
            raise ValueError(f"{where} must hold exactly {sorted(expected)}, got {sorted(node)}")
        rows = _Rows(self.num_clients, list(self.layout), list(self.layout.values()), _DTYPES[node["dtype"]])
        clients = _int_vector(node["clients"], f"{where}['clients']")
        if len(clients) and (clients.min() < 0 or clients.max() >= self.num_clients):
            raise ValueError(f"{where}['clients'] names a client outside 0..{self.num_clients - 1}")
        if len(np.unique(clients)) != len(clients):
            raise ValueError(f"{where}['clients'] repeats a client")
        self.kinds[kind] = rows
        if not referenced:
            values = node["values"]
            if not isinstance(values, torch.Tensor) or values.dtype != rows.dtype or \
                    tuple(values.shape) != (len(clients), rows.width):
                raise ValueError(f"{where}['values'] must be a {rows.dtype} tensor of shape "
                                 f"({len(clients)}, {rows.width})")
            rows.data = values.numpy().copy()
            rows.slot[clients] = np.arange(len(clients))
            rows.count = len(clients)
            self._maybe_spill()
            return
        self._open_file(rows, kind, node, clients, where)

    def _open_file(self, rows: _Rows, kind: str, node: dict[str, Any], clients: np.ndarray, where: str) -> None:
        if node["file"] != f"{kind}.bin":
            raise ValueError(f"{where}['file'] must be {kind}.bin, got {node['file']!r}")
        if self.directory is None:
            raise ValueError(f"{where} references a file, but the checkpoint's folder is not known")
        slots = _int_vector(node["rows"], f"{where}['rows']")
        crc = _int_vector(node["crc"], f"{where}['crc']")
        if len(slots) != len(clients) or len(crc) != len(clients):
            raise ValueError(f"{where}: clients, rows and crc must have the same length")
        if len(slots) and (slots.min() < 0 or len(np.unique(slots)) != len(slots)):
            raise ValueError(f"{where}['rows'] holds a negative or repeated row")
        path = self.directory / f"{kind}.bin"
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ValueError(f"{where}: cannot read {path}: {e.strerror or e}") from None
        rows.data = None
        rows.path = path
        rows.used = size // rows.row_bytes if rows.row_bytes else 0
        if len(slots) and int(slots.max()) >= rows.used:
            raise ValueError(f"{where}: {path} holds {rows.used} rows, the checkpoint references row "
                             f"{int(slots.max())}")
        rows.fd = os.open(path, os.O_RDWR)
        rows.crc = np.zeros(max(rows.used, 8), dtype=np.int64)
        rows.fresh = np.zeros(len(rows.crc), dtype=bool)
        order = np.argsort(slots)
        for start in range(0, len(order), _CHUNK_ROWS):
            for i in order[start:start + _CHUNK_ROWS]:
                raw = os.pread(rows.fd, rows.row_bytes, int(slots[i]) * rows.row_bytes)
                if zlib.crc32(raw) != int(crc[i]):
                    raise ValueError(f"{where}: row {int(slots[i])} of {path} (client {int(clients[i])}) does not "
                                     "match its CRC-32: the file was damaged or changed")
                if not np.isfinite(np.frombuffer(raw, dtype=rows.np_dtype)).all():
                    raise ValueError(f"{where}: row {int(slots[i])} of {path} (client {int(clients[i])}) holds a "
                                     "non-finite value")
        rows.crc[slots] = crc
        rows.slot[clients] = slots
        rows.count = len(clients)
        referenced = np.zeros(rows.used, dtype=bool)
        referenced[slots] = True
        rows.free = np.flatnonzero(~referenced).tolist()[::-1]


def _int_vector(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.int64 or value.ndim != 1:
        raise ValueError(f"{where} must be a one-dimensional int64 tensor")
    return value.numpy().copy()
