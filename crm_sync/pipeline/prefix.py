"""`key_prefix`: one set of syncs' asset keys, op, job, schedule and sensor names under a
prefix, so two CrmSync Components (or a host project's own `quarantine`) never collide.

The assets are built as always (crm_sync/pipeline/assets.py) and prefixed here, in one place:
`AssetsDefinition.with_attributes(asset_key_replacements=...)` moves every key and every
dependency on it (what `load_assets_from_modules(key_prefix=...)` does). That keeps the op
names, and two ops of one name in one code location fail Dagster's implicit asset job
("conflicting node definitions with the same name"), so each op is renamed too, to the
`<prefix>__<name>` that `@dg.asset(key_prefix=...)` itself would give it.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

KeyPrefix = Sequence[str]


def as_prefix(key_prefix: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"crm"` or `["team", "crm"]` (as dg's own key prefixes) -> a tuple; None -> ()."""
    if not key_prefix:
        return ()
    return (key_prefix,) if isinstance(key_prefix, str) else tuple(key_prefix)


def prefixed_name(prefix: KeyPrefix, name: str) -> str:
    """A job, schedule, sensor or op name under the prefix: `team__crm__sync_leads`."""
    return "__".join([*prefix, name])


def asset_key(prefix: KeyPrefix, name: str) -> dg.AssetKey:
    return dg.AssetKey([*prefix, name])


def prefix_assets(assets: list[dg.AssetsDefinition], prefix: KeyPrefix
                  ) -> list[dg.AssetsDefinition]:
    """The same assets with every key, dependency and op name under `prefix` (none: as they
    are). Every dependency of crm_sync's assets is one of its own, so all move together."""
    if not prefix:
        return assets
    keys = {k for a in assets for k in (*a.keys, *a.dependency_keys)}
    replacements = {k: k.with_prefix(list(prefix)) for k in keys}
    return [_rename_op(a.with_attributes(asset_key_replacements=replacements), prefix)
            for a in assets]


def _rename_op(asset: dg.AssetsDefinition, prefix: KeyPrefix) -> dg.AssetsDefinition:
    node = asset.node_def
    if not isinstance(node, dg.OpDefinition):
        return asset
    # Dagster has no public call that renames an asset's op after it is built; these two are
    # what AssetsDefinition.with_attributes and OpDefinition.configured use themselves.
    attributes = asset.get_attributes_dict()
    attributes["node_def"] = node.with_replaced_properties(name=prefixed_name(prefix, node.name))
    return dg.AssetsDefinition.dagster_internal_init(**attributes)
