"""Muon on sharded params: DTensors (FSDP2's ``fully_shard``, HSDP, tensor-parallel row or
column shards), for :func:`gradfuse.functional.muon_`.

The momentum update and the weight update are elementwise: each rank runs them on its local
shard, as every gradfuse optimizer does. The Newton-Schulz iteration needs whole matrices, so
per step, for each sharded weight:

1. the prepare pass writes this rank's shard of the Newton-Schulz input straight into a send
   buffer laid out by owner rank;
2. one ``all_to_all`` per (process group, device, dtype) sends every shard to the rank that
   owns the matrix (owners spread the matrices over the ranks by Newton-Schulz cost, largest
   first, each to the least-loaded rank), which puts the matrix together from its shards;
3. each owner runs the same batched Newton-Schulz as the unsharded path on the matrices it
   owns (one chain of batched matmuls per matrix shape);
4. a second ``all_to_all`` sends every rank its shard of each result; the apply pass updates the
   local shard with it.

So each rank orthogonalises about 1/world of the matrices, and the bytes moved are the
Newton-Schulz inputs and outputs once each (in the iteration's dtype: bfloat16 by default),
not a full copy of every matrix on every rank. The result is the unsharded Muon's: the gathered
matrix is bitwise the one the unsharded prepare pass writes, and the iteration is the same.

Supported placements: ``Shard(d)`` (any tensor dim ``d``, even or uneven shards as
``torch.chunk`` cuts them, the way DTensor and FSDP2 do) on one mesh dimension, ``Replicate()``
on the others; all-``Replicate`` DTensors hold whole matrices and need no exchange. Every rank
of a process group must step the same sharded params (as FSDP2 and DTensor code does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gradfuse import _buffers


@dataclass
class Sharded:
    """Where one sharded weight lives: the process group of its sharded mesh dimension, the
    tensor dim cut into shards, and every rank's size along it (``torch.chunk``'s cut)."""

    index: int  # into muon_'s params
    shape: tuple[int, ...]  # global shape
    dim: int
    sizes: tuple[int, ...]  # along ``dim``, per rank of ``group``
    rank: int  # this process's rank in ``group``
    group: Any  # torch.distributed ProcessGroup

    def local_shape(self, r: int) -> tuple[int, ...]:
        return (*self.shape[: self.dim], self.sizes[r], *self.shape[self.dim + 1 :])

    def local_numel(self, r: int) -> int:
        n = 1
        for s in self.local_shape(r):
            n *= s
        return n

    def start(self, r: int) -> int:
        return sum(self.sizes[:r])


def chunk_sizes(size: int, parts: int) -> tuple[int, ...]:
    """The sizes ``torch.chunk(x, parts)`` cuts a dimension of ``size`` into, padded with zeros
    to ``parts`` entries (DTensor's ``Shard`` and FSDP2 cut this way: trailing ranks may hold
    less, or nothing)."""
    per = -(-size // parts) if parts else 0
    return tuple(max(0, min(size, (r + 1) * per) - r * per) for r in range(parts))


def _placements_text(t: Any) -> str:
    return f"placements {tuple(t.placements)} on {t.device_mesh}"


def unwrap(
    params: Sequence[Any], grads: Sequence[Any], bufs: Sequence[Any]
) -> tuple[list[Any], list[Any], list[Any], list[Sharded | None]]:
    """The local tensors of ``params``, ``grads`` and ``bufs`` (DTensors replaced by their local
    shards, plain tensors unchanged), and per param its :class:`Sharded` layout, or None for a
    plain tensor or a DTensor that holds whole matrices (all ``Replicate``). Checks that the
    three tensors of a param are distributed alike and that the placement is one this module
    gathers; raises before anything is written."""
    lp, lg, lb = list(params), list(grads), list(bufs)
    layouts: list[Sharded | None] = [None] * len(lp)
    for i, p in enumerate(params):
        trio = (("params", p), ("grads", grads[i]), ("momentum_buffers", bufs[i]))
        kinds = [_buffers._is_dtensor(t) for _, t in trio]
        if not any(kinds):
            continue
        if not all(kinds):
            what = ", ".join(
                f"{name}[{i}] is {'a DTensor' if k else 'a plain tensor'}"
                for (name, _), k in zip(trio, kinds, strict=True)
            )
            raise ValueError(
                f"muon_: {what} (global shape {tuple(p.shape)}); expected all three DTensors "
                f"with the same placements, or all plain tensors"
            )
        for name, t in trio:
            _buffers._dtensor_local(t, f"muon_: {name}[{i}]")  # refuses Partial placements
            if t.device_mesh != p.device_mesh or tuple(t.placements) != tuple(p.placements):
                raise ValueError(
                    f"muon_: {name}[{i}] is a DTensor with {_placements_text(t)} but params[{i}] "
                    f"has {_placements_text(p)}; expected the same distribution"
                )
        lp[i], lg[i], lb[i] = (t._local_tensor for _, t in trio)
        layouts[i] = _layout(i, p)
    return lp, lg, lb, layouts


def _layout(i: int, p: Any) -> Sharded | None:
    from torch.distributed.tensor import Replicate, Shard

    mesh = p.device_mesh
    placements = tuple(p.placements)
    sharded = [m for m, pl in enumerate(placements) if not isinstance(pl, Replicate)]
    if not sharded:
        return None
    unsupported = (
        f"muon_: params[{i}] (global shape {tuple(p.shape)}, local shape "
        f"{tuple(p._local_tensor.shape)}, dtype {p.dtype}) is a DTensor with "
        f"{_placements_text(p)}; gradfuse's Muon gathers matrices sharded along one mesh "
        f"dimension: Shard(d) on one mesh dim and Replicate() on the others (FSDP2's "
        f"fully_shard, HSDP, row or column tensor parallelism)"
    )
    if len(sharded) > 1 or type(placements[sharded[0]]) is not Shard:
        raise NotImplementedError(
            f"{unsupported}. Redistribute it to such a placement, or put it in a group "
            f"with use_muon=False (AdamW)"
        )
    mesh_dim = sharded[0]
    dim = placements[mesh_dim].dim
    dim = dim + p.ndim if dim < 0 else dim
    world = mesh.size(mesh_dim)
    rank = mesh.get_local_rank(mesh_dim)
    layout = Sharded(
        index=i,
        shape=tuple(int(s) for s in p.shape),
        dim=dim,
        sizes=chunk_sizes(int(p.shape[dim]), world),
        rank=rank,
        group=mesh.get_group(mesh_dim),
    )
    if tuple(p._local_tensor.shape) != layout.local_shape(rank):
        raise NotImplementedError(
            f"{unsupported}, cut as torch.chunk cuts (local shape {layout.local_shape(rank)} "
            f"on this rank); this one is not"
        )
    return layout


@dataclass
class Exchange:
    """The sharded weights of one (process group, device, param dtype), which travel together:
    ``items`` in param order, ``owner`` the rank that orthogonalises each, and this rank's send
    buffer (its shards of the Newton-Schulz inputs, grouped by owner rank)."""

    items: list[Sharded]
    owner: list[int]
    send: Any = None
    send_splits: list[int] = field(default_factory=list)


def plan(layouts: Sequence[Sharded | None], params: Sequence[Any]) -> list[Exchange]:
    """Group the sharded weights into exchanges and give each weight an owner rank. The same
    inputs give the same plan on every rank (no communication needed to agree)."""
    from gradfuse.functional._muon import matrix_shape

    by_key: dict[tuple[Any, ...], list[Sharded]] = {}
    for lay in layouts:
        if lay is not None:
            local = params[lay.index]
            by_key.setdefault((id(lay.group), local.device, local.dtype), []).append(lay)
    out = []
    for items in by_key.values():
        world = len(items[0].sizes)

        # Newton-Schulz costs ~ rows * cols * min(rows, cols) per iteration: largest first,
        # each to the least-loaded rank (ties: the lower rank, then param order).
        def cost(lay: Sharded) -> int:
            rows, cols = matrix_shape(lay.shape)
            return rows * cols * min(rows, cols)

        load = [0] * world
        owner = [0] * len(items)
        for k in sorted(range(len(items)), key=lambda k: (-cost(items[k]), k)):
            r = min(range(world), key=lambda r: (load[r], r))
            owner[k] = r
            load[r] += cost(items[k])
        out.append(Exchange(items, owner))
    return out


def allocate_inputs(ex: Exchange, stored: Any, device: Any, ns_inputs: list[Any]) -> None:
    """This rank's send buffer of ``ex``, in the Newton-Schulz input's stored dtype, and each
    weight's entry of ``ns_inputs`` (the prepare pass's output) as a view into it."""
    import torch

    me = ex.items[0].rank
    world = len(ex.items[0].sizes)
    ex.send_splits = [
        sum(lay.local_numel(me) for lay, o in zip(ex.items, ex.owner, strict=True) if o == r)
        for r in range(world)
    ]
    ex.send = torch.empty(sum(ex.send_splits), dtype=stored, device=device)
    offset = 0
    for r in range(world):
        for lay, o in zip(ex.items, ex.owner, strict=True):
            if o == r:
                n = lay.local_numel(me)
                ns_inputs[lay.index] = ex.send[offset : offset + n].view(lay.local_shape(me))
                offset += n


def orthogonalise(ex: Exchange, orthogonalise_batch: Any) -> dict[int, Any]:
    """Steps 2-4 of the module docstring for one exchange: returns, per param index, this
    rank's shard of the orthogonalised update (contiguous, in the send buffer's dtype).
    ``orthogonalise_batch(batch)`` runs the Newton-Schulz iteration on a ``(B, rows, cols)``
    batch of the send buffer's dtype and returns the result in that dtype."""
    import torch
    import torch.distributed as dist

    from gradfuse.functional._muon import matrix_shape

    first = ex.items[0]
    me, world, pg = first.rank, len(first.sizes), first.group
    send, device = ex.send, ex.send.device
    mine = [lay for lay, o in zip(ex.items, ex.owner, strict=True) if o == me]
    # Every rank's shards of the matrices this rank owns, rank by rank.
    recv_splits = [sum(lay.local_numel(r) for lay in mine) for r in range(world)]
    recv = torch.empty(sum(recv_splits), dtype=send.dtype, device=device)
    dist.all_to_all_single(recv, send, recv_splits, ex.send_splits, group=pg)
    # Put each owned matrix together in a batch of its matrix shape.
    batches: dict[tuple[int, int], list[Sharded]] = {}
    for lay in mine:
        batches.setdefault(matrix_shape(lay.shape), []).append(lay)
    starts = [sum(recv_splits[:r]) for r in range(world)]
    offsets = {}  # (rank, param index) -> offset of that rank's shard in recv
    for r in range(world):
        at = starts[r]
        for lay in mine:
            offsets[r, lay.index] = at
            at += lay.local_numel(r)
    results: dict[int, Any] = {}
    for (rows, cols), lays in batches.items():
        batch = torch.empty((len(lays), rows, cols), dtype=send.dtype, device=device)
        for j, lay in enumerate(lays):
            pieces = [
                recv[offsets[r, lay.index] : offsets[r, lay.index] + lay.local_numel(r)].view(
                    lay.local_shape(r)
                )
                for r in range(world)
            ]
            torch.cat(pieces, dim=lay.dim, out=batch[j].view(lay.shape))
        ortho = orthogonalise_batch(batch)
        for j, lay in enumerate(lays):
            results[lay.index] = ortho[j].view(lay.shape)
    # Send every rank its shard of each result: rank r gets, from each owner, the results'
    # shards in the order of its own send buffer, so they land where its inputs left from.
    back = [
        results[lay.index].narrow(lay.dim, lay.start(r), lay.sizes[r]).reshape(-1)
        for r in range(world)
        for lay in mine
    ]
    back_send = (torch.cat(back) if back else torch.empty(0, dtype=send.dtype, device=device)).to(
        send.dtype
    )
    updates = torch.empty_like(send)
    dist.all_to_all_single(updates, back_send, ex.send_splits, recv_splits, group=pg)
    out = {}
    offset = 0
    for r in range(world):
        for lay, o in zip(ex.items, ex.owner, strict=True):
            if o == r:
                n = lay.local_numel(me)
                out[lay.index] = updates[offset : offset + n].view(lay.local_shape(me))
                offset += n
    return out
