"""What a placement's published table says, read through the serving engine: the ranked offers of
one profile (kind "ranking") or every offer's posterior (kind "posterior", auto-optimization).

This is the table as published, before eligibility rules, caps, duplicates and fallbacks: the
decision step (`engine.decide`) applies those. `GET /rankings/{placement_id}` serves it, so a
caller can read rankings without opening Parquet files.
"""

from __future__ import annotations

from typing import Any

from offerflow.decisioning.decision_types import DecisionError


def unread_table_note(metadata: dict[str, Any]) -> str | None:
    """Why decisions do not read a published table, or None when they do: a personalized model that
    qualified fewer than two offers ranks nothing (`PlacementPlan.too_few_qualified`)."""
    if metadata.get("ai_model_type") != "personalized" or metadata.get("offers_qualified", 2) >= 2:
        return None
    return (f"{metadata.get('ai_model')} qualified {metadata['offers_qualified']} offers (fewer than 2), so decisions"
            " do not read this table: they serve the placement in a random order (source random_too_few_qualified)")


def published_ranking(engine: Any, placement_ids: list[str], placement_id: str,
                      profile_id: str | None, limit: int) -> dict[str, Any]:
    """The served version of `placement_id`'s table, as a JSON-ready dict (see the module docstring).

    Raises DecisionError: an unknown placement ("unknown placement ..."), nothing published, or a
    ranking table asked without `profile_id`."""
    if placement_id not in placement_ids:
        raise DecisionError(f"unknown placement '{placement_id}' (known: {', '.join(placement_ids)})")
    snapshot = engine.snapshot(placement_id)
    if snapshot is None:
        raise DecisionError(f"placement '{placement_id}' has no published table (it ranks by its formula "
                            "or priority at decision time, or no run has published it yet)")
    head = {"placement_id": placement_id, "version": snapshot.version, "kind": snapshot.kind,
            "ai_model": snapshot.metadata.get("ai_model"), "model_version": snapshot.metadata.get("model_version")}
    if snapshot.kind == "posterior":  # the engine's arrays: its score is the decisions' (value-weighted means)
        post, table = engine.posterior_arrays(placement_id, snapshot), snapshot.posteriors
        # counts (successes are stored as floats, but count 0/1 outcomes: value weighting is `value_weight`)
        displays, successes = table["displays"].to_numpy(), table["successes"].to_numpy(float)
        order = sorted(range(len(post.offer_ids)), key=lambda j: (-post.means[j], post.offer_ids[j]))[:limit]
        return {**head, "profile_id": None, "offers": [
            {"offer_id": post.offer_ids[j], "rank": k + 1, "score": float(post.means[j]),
             "alpha": float(post.alpha[j]), "beta": float(post.beta[j]), "displays": int(displays[j]),
             "successes": int(round(successes[j]))} for k, j in enumerate(order)]}
    if profile_id is None:
        raise DecisionError(f"placement '{placement_id}' ranks per profile: give ?profile_id=")
    offer_ids, scores = snapshot.lookup(profile_id)
    return {**head, "profile_id": profile_id, "known_profile": bool(len(offer_ids)), "offers": [
        {"offer_id": str(o), "rank": k + 1, "score": float(s)}
        for k, (o, s) in enumerate(zip(offer_ids[:limit], scores[:limit]))],
        "note": unread_table_note(snapshot.metadata)}
