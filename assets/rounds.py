"""MALT rounds as part of each asset's identity.

Round 1 is the graph under its plain keys (``credit``, groups ``expand``, ``credit`` ...).
Round i >= 2 is the same graph under the key prefix ``round_<i>`` (``round_2/credit``), in
groups ``round_<i>_<group>`` and jobs ``round_<i>_<job>``, writing its own lake
(``<warehouse>/rounds/round-<i>``). Its expansion assets depend on round i-1's adapters and
expand with them, so the UI shows each round's materializations apart, draws the dependency
between rounds, and its launchpad starts any round (its run config names the round's ops,
``round_2__credit``; the CLI's ``--round`` renames them so). How many rounds the graph holds is
``MALT_ROUNDS`` (default 2). One round is spelled four ways: ``round_2/credit`` (key),
``round_2__credit`` (op), ``round_2_tree`` (group, job) and ``rounds/round-2`` (its lake).
"""

from __future__ import annotations

import dagster as dg

from malt_lake.errors import MaltLakeError

PREFIX = "round_"


def prefix(index: int) -> str:
    """``round_<i>``: the key prefix, and the start of group and job names, of round i >= 2."""
    return f"{PREFIX}{index}"


def asset_key(name: str, index: int) -> dg.AssetKey:
    """The key of asset ``name`` (a plain name such as ``credit``) in round ``index``."""
    key = dg.AssetKey(name)
    return key if index == 1 else key.with_prefix(prefix(index))


def in_round(name: str, index: int) -> str:
    """The name of group or job ``name`` (``credit``, ``tree`` ...) in round ``index``."""
    return name if index == 1 else f"{prefix(index)}_{name}"


def round_of_key(key: dg.AssetKey) -> int:
    """1 for a plain key, i for ``round_<i>/...``."""
    head = key.path[0]
    if len(key.path) > 1 and head.startswith(PREFIX) and head[len(PREFIX):].isdigit():
        return int(head[len(PREFIX):])
    return 1


def round_of(context: dg.AssetExecutionContext) -> int:
    """The round of the asset (or multi-asset) that is running."""
    return round_of_key(next(iter(context.assets_def.keys)))


def key_prefix(index: int) -> list[str] | None:
    """The ``key_prefix`` of round ``index``'s assets (None in round 1)."""
    return None if index == 1 else [prefix(index)]


def op_name(name: str, index: int) -> str:
    """The op (node) of asset ``name`` in round ``index``: its run config sits under this
    name in ``ops`` (``round_2__credit``), as Dagster names a prefixed asset's op."""
    return asset_key(name, index).to_python_identifier()


def previous_adapter(role: str, index: int) -> list[dg.AssetDep]:
    """Round ``index``'s expansion of ``role`` depends on round index-1's adapter of that
    role (every dataset partition of it: a shard expands with its dataset's adapter)."""
    if index == 1:
        return []
    return [dg.AssetDep(asset_key(f"{role}_adapter", index - 1),
                        partition_mapping=dg.AllPartitionMapping())]


def check_round(index: int, defined: int) -> None:
    """A round the graph does not hold is a clear error, not a run of another round."""
    if index < 1:
        raise MaltLakeError(f"round {index}: rounds count from 1")
    if index > defined:
        raise MaltLakeError(
            f"round {index} is not in the asset graph, which holds rounds 1..{defined}: set "
            f"MALT_ROUNDS={index} (for the UI too, so it shows the same rounds)")

