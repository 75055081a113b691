"""From scored pairs to clusters, and from a cluster to the changes a suggestion proposes.

Clustering is single linkage over the pairs at or above the threshold, strongest first, under
constraints checked at every merge, so a constraint never splits a cluster afterwards:
- two acteurs of one source are never in one cluster (unless intra_source), a parent counting the
  sources of its ACTIF children;
- two acteurs of a cluster people rejected (a REJETEE suggestion) are never put together again.
Existing parents are nodes like orphans and come with all their children: clusters never split.

Parent choice (as upstream): one existing parent in the cluster is kept; several: the one with most
ACTIF children is kept (ties: smallest identifiant) and the others are emptied then deleted; none:
a new parent with a deterministic, order-free identifiant (uuid5 of the sorted members).
Parent data: per field, the first non-empty value among the members, the kept parent first, then by
`source_priority` (unlisted sources after, then by identifiant).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Copied from the members to the parent; never: identifiant_unique, identifiant_externe, source,
# statut, dates, lieu_prestation, propositions, périmètres.
PARENT_FIELDS = (
    "nom", "description", "adresse", "adresse_complement", "code_postal", "ville", "url", "email",
    "telephone", "nom_commercial", "nom_officiel", "siren", "siret", "naf_principal", "commentaires",
    "horaires_osm", "horaires_description", "public_accueilli", "reprise", "consignes_dacces",
    "acteur_type_id", "action_principale_id", "exclusivite_de_reprisereparation", "uniquement_sur_rdv",
    "siret_is_closed", "latitude", "longitude",
)
CREATE_PARENT = "acteur_create_as_parent"
KEEP_PARENT = "acteur_keep_as_parent"
UPDATE_PARENT_ID = "acteur_update_parent_id"
DELETE_PARENT = "acteur_delete_as_parent"


@dataclass
class Member:
    """An orphan or a parent of the exhaustive view, as read."""

    identifiant_unique: str
    est_parent: bool
    source_id: int | None
    data: dict[str, Any]
    # Parents only: (identifiant, statut, source_id) of each child.
    children: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def active_children(self) -> list[str]:
        return [c for c, statut, _ in self.children if statut == "ACTIF"]

    @property
    def sources(self) -> frozenset[int]:
        """The sources it stands for: its own, or its ACTIF children's (an INACTIF child counts not)."""
        if self.est_parent:
            return frozenset(s for _, statut, s in self.children if statut == "ACTIF" and s is not None)
        return frozenset() if self.source_id is None else frozenset({self.source_id})


@dataclass
class Cluster:
    members: list[str]
    pairs: list[dict[str, Any]]


@dataclass
class ClusteringOutcome:
    clusters: list[Cluster]
    refused_same_source: int = 0
    refused_rejected: int = 0


def cluster(
    members: dict[str, Member],
    pairs: Iterable[dict[str, Any]],
    *,
    intra_source: bool = False,
    rejected: Iterable[tuple[str, str]] = (),
) -> ClusteringOutcome:
    """Constrained single linkage; `pairs` are {a, b, match_weight, ...}, merged strongest first."""
    root: dict[str, str] = {}
    component_members: dict[str, set[str]] = {}
    component_sources: dict[str, set[int]] = {}
    rejected_with: dict[str, set[str]] = {}
    for a, b in rejected:
        rejected_with.setdefault(a, set()).add(b)
        rejected_with.setdefault(b, set()).add(a)

    def find(x: str) -> str:
        if x not in root:
            root[x] = x
            component_members[x] = {x}
            component_sources[x] = set(members[x].sources)
            return x
        path = []
        while root[x] != x:
            path.append(x)
            x = root[x]
        for p in path:
            root[p] = x
        return x

    outcome = ClusteringOutcome(clusters=[])
    kept_pairs: dict[str, list[dict[str, Any]]] = {}
    ordered = sorted(pairs, key=lambda p: (-p["match_weight"], p["a"], p["b"]))
    for pair in ordered:
        if pair["a"] not in members or pair["b"] not in members:
            continue
        ra, rb = find(pair["a"]), find(pair["b"])
        if ra == rb:
            kept_pairs[ra].append(pair)
            continue
        if not intra_source and component_sources[ra] & component_sources[rb]:
            outcome.refused_same_source += 1
            continue
        small, large = sorted((ra, rb), key=lambda r: len(component_members[r]))
        if any(rejected_with.get(m, set()) & component_members[large] for m in component_members[small]):
            outcome.refused_rejected += 1
            continue
        root[small] = large
        component_members[large] |= component_members.pop(small)
        component_sources[large] |= component_sources.pop(small)
        kept_pairs[large] = kept_pairs.pop(large, []) + kept_pairs.pop(small, []) + [pair]
    for r, ids in component_members.items():
        if len(ids) > 1:
            outcome.clusters.append(Cluster(members=sorted(ids), pairs=kept_pairs.get(r, [])))
    outcome.clusters.sort(key=lambda c: c.members[0])
    return outcome


def new_parent_id(child_ids: Sequence[str]) -> str:
    """Deterministic and order-free: the same members always give the same parent."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, ",".join(sorted(child_ids))))


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == "__empty__"


def parent_data(ordered_members: Sequence[Member]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in PARENT_FIELDS:
        for member in ordered_members:
            value = member.data.get(name)
            if not _empty(value):
                data[name] = value
                break
    # A location is one value: latitude and longitude come from the same member.
    for member in ordered_members:
        if not _empty(member.data.get("latitude")) and not _empty(member.data.get("longitude")):
            data["latitude"], data["longitude"] = member.data["latitude"], member.data["longitude"]
            break
    return data


def suggestion_for(
    found: Cluster, members: dict[str, Member], source_priority: Sequence[int]
) -> dict[str, Any]:
    """The suggestion (title + ordered changes) and its contexte for one cluster."""
    group = [members[i] for i in found.members]
    parents = [m for m in group if m.est_parent]
    orphans = [m for m in group if not m.est_parent]
    rank = {source: i for i, source in enumerate(source_priority)}

    def priority(member: Member) -> tuple[int, str]:
        sources = member.sources or frozenset({-1})
        return (min(rank.get(s, len(rank)) for s in sources), member.identifiant_unique)

    kept: Member | None = None
    if parents:
        kept = sorted(parents, key=lambda p: (-len(p.active_children), p.identifiant_unique))[0]
    others = sorted((m for m in group if m is not kept), key=priority)
    data = parent_data(([kept] if kept else []) + others)

    changes: list[dict[str, Any]] = []

    def add(model: str, identifiant: str, reason: str, change_data: dict[str, Any] | None = None) -> None:
        changes.append({"order": len(changes) + 1, "reason": reason, "model_name": model,
                        "model_params": {"id": identifiant, "data": change_data or {}}})

    if kept is not None:
        parent_id = kept.identifiant_unique
        add(KEEP_PARENT, parent_id, "parent existant gardé (le plus d'enfants actifs)", data)
    else:
        parent_id = new_parent_id([m.identifiant_unique for m in orphans])
        add(CREATE_PARENT, parent_id, "nouveau parent", data)
    for orphan in sorted(orphans, key=lambda m: m.identifiant_unique):
        add(UPDATE_PARENT_ID, orphan.identifiant_unique, "acteur rattaché au parent", {"parent_id": parent_id})
    for absorbed in sorted((p for p in parents if p is not kept), key=lambda m: m.identifiant_unique):
        for child in sorted(absorbed.active_children):
            add(UPDATE_PARENT_ID, child, f"enfant de {absorbed.identifiant_unique} déplacé",
                {"parent_id": parent_id, "previous_parent_id": absorbed.identifiant_unique})
        add(DELETE_PARENT, absorbed.identifiant_unique, "parent vidé puis supprimé", {})

    best = max((p["match_probability"] for p in found.pairs), default=None)
    weakest = min((p["match_probability"] for p in found.pairs), default=None)
    contexte = {
        "parent_id": parent_id,
        "members": [_member_context(m) for m in group],
        "pairs": found.pairs,
        "match_probability": {"min": weakest, "max": best},
    }
    where = f"{data.get('code_postal', '')} {data.get('ville', '')}".strip()
    title = f"Regroupement de {len(group)} acteurs : {data.get('nom', '')} ({where})"
    return {"contexte": contexte, "suggestion": {"title": title, "changes": changes}}


CONTEXT_FIELDS = ("nom", "adresse", "adresse_complement", "code_postal", "ville", "siret", "siren",
                  "telephone", "url", "email", "acteur_type_id", "latitude", "longitude")


def _member_context(member: Member) -> dict[str, Any]:
    described: dict[str, Any] = {"identifiant_unique": member.identifiant_unique, "est_parent": member.est_parent,
                                 "source_id": member.source_id}
    described.update({k: member.data.get(k) for k in CONTEXT_FIELDS})
    if member.est_parent:
        described["children"] = [{"identifiant_unique": c, "statut": s, "source_id": src}
                                  for c, s, src in member.children]
    return described
