"""The Deployment controller's arithmetic against Kubernetes' documented examples."""

from __future__ import annotations

from typing import Any

import pytest

from harness.kube import apps, deployutil

Obj = dict[str, Any]


def deployment(replicas: int, surge: int | str = "25%", unavailable: int | str = "25%") -> Obj:
    return {
        "metadata": {"name": "web", "generation": 2},
        "spec": {
            "replicas": replicas,
            "strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{}]}},
        },
    }


def rs(name: str, replicas: int, available: int, t: int, **ann: str) -> Obj:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": deployutil.rfc3339(1_700_000_000 + t),
            "annotations": ann,
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "availableReplicas": available},
    }


# replicas 1..10 with the 25 % defaults: (maxSurge rounded up, maxUnavailable down)
FENCEPOSTS = {1: (1, 0), 2: (1, 0), 3: (1, 0), 4: (1, 1), 5: (2, 1), 6: (2, 1), 7: (2, 1),
              8: (2, 2), 9: (3, 2), 10: (3, 2)}  # fmt: skip


@pytest.mark.parametrize("replicas", sorted(FENCEPOSTS))
def test_fenceposts_with_the_defaults(replicas: int) -> None:
    assert deployutil.resolve_fenceposts("25%", "25%", replicas) == FENCEPOSTS[replicas]


def test_both_zero_resolves_to_one_unavailable() -> None:
    # the theory that surge might not work due to quota
    assert deployutil.resolve_fenceposts(0, "10%", 3) == (0, 1)


def test_proportional_scaling_of_a_stuck_rollout() -> None:
    # kubernetes.io: 10 replicas, maxSurge 3, maxUnavailable 2, a new version that never
    # becomes ready (old 8, new 5); scaled to 15, 3 go to the old RS and 2 to the new one
    d = deployment(15, 3, 2)
    d["status"] = {"replicas": 13}
    old = rs("web-old", 8, 8, 0, **{apps.MAX_REPLICAS: "13", apps.DESIRED_REPLICAS: "10"})
    new = rs("web-new", 5, 0, 10, **{apps.MAX_REPLICAS: "13", apps.DESIRED_REPLICAS: "10"})
    assert deployutil.is_scaling_event(d, [old, new])
    assert deployutil.proportional_sizes(d, new, [old]) == {"web-old": 11, "web-new": 7}


def test_one_active_replicaset_takes_the_whole_scale() -> None:
    d = deployment(6)
    only = rs("web-a", 3, 3, 0)
    assert deployutil.proportional_sizes(d, only, []) == {"web-a": 6}


def simulate(replicas: int, surge: int | str, unavailable: int | str) -> list[tuple[int, int]]:
    """Roll old → new, pods becoming available one step after they are asked for.
    Returns (total pods, available pods) after every step."""
    d = deployment(replicas, surge, unavailable)
    old = rs("web-old", replicas, replicas, 0)
    new = rs("web-new", 0, 0, 10)
    seen = []
    for _ in range(4 * replicas + 10):
        for r in (old, new):  # last step's pods are available now; scaled-down ones gone
            r["status"]["availableReplicas"] = min(r["spec"]["replicas"], r["status"]["replicas"])
            r["status"]["replicas"] = r["spec"]["replicas"]
        if new["spec"]["replicas"] == replicas and old["spec"]["replicas"] == 0:
            break
        all_rss = [old, new]
        grow = deployutil.new_rs_new_replicas(d, all_rss, new)
        if grow != new["spec"]["replicas"]:
            new["spec"]["replicas"] = grow
        else:
            for name, size in deployutil.old_rs_scale_down(d, all_rss, [old], new).items():
                assert name == "web-old"
                old["spec"]["replicas"] = size
                old["status"]["availableReplicas"] = min(old["status"]["availableReplicas"], size)
        total = sum(r["status"]["replicas"] for r in all_rss)
        total = max(total, sum(r["spec"]["replicas"] for r in all_rss))
        avail = sum(r["status"]["availableReplicas"] for r in all_rss)
        seen.append((total, avail))
    assert new["spec"]["replicas"] == replicas and old["spec"]["replicas"] == 0
    return seen


ROLLS = [(4, "25%", "25%"), (10, 3, 2), (3, 0, 1), (5, 2, 0), (10, "100%", 0)]


@pytest.mark.parametrize(("replicas", "surge", "unavailable"), ROLLS)
def test_a_rolling_update_stays_inside_its_fenceposts(
    replicas: int, surge: int | str, unavailable: int | str
) -> None:
    s, u = deployutil.resolve_fenceposts(surge, unavailable, replicas)
    for total, available in simulate(replicas, surge, unavailable):
        assert total <= replicas + s
        assert available >= replicas - u


def test_status_conditions_complete_progressing_and_timeout() -> None:
    d = deployment(2)
    new = rs("web-new", 2, 2, 0)
    st = deployutil.calculate_status(d, [new], new)
    deployutil.rollout_conditions(d, st, new, [new], now=1_700_000_100)
    cond = deployutil.condition(st, "Progressing")
    assert cond and cond["reason"] == "NewReplicaSetAvailable"
    assert cond["message"] == 'ReplicaSet "web-new" has successfully progressed.'
    # a stuck rollout: no progress for longer than progressDeadlineSeconds
    d["spec"]["progressDeadlineSeconds"] = 30
    stuck = rs("web-new", 2, 0, 0)
    old = deployutil.new_condition("Progressing", "True", "ReplicaSetUpdated", "x", 1_700_000_000)
    d["status"] = {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 0, "availableReplicas": 0,
        "conditions": [old],
    }  # fmt: skip
    st = deployutil.calculate_status(d, [stuck], stuck)
    deployutil.rollout_conditions(d, st, stuck, [stuck], now=1_700_000_031)
    cond = deployutil.condition(st, "Progressing")
    assert cond and (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cond["message"] == 'ReplicaSet "web-new" has timed out progressing.'


def test_replica_failure_is_copied_from_the_new_replicaset() -> None:
    d = deployment(3)
    new = rs("web-new", 3, 1, 0)
    new["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True",
                                    "reason": "FailedCreate", "message": "quota"}]  # fmt: skip
    st = deployutil.calculate_status(d, [new], new)
    deployutil.rollout_conditions(d, st, new, [new], now=1_700_000_000)
    cond = deployutil.condition(st, "ReplicaFailure")
    assert cond and (cond["reason"], cond["message"]) == ("FailedCreate", "quota")


def test_template_hash_has_kubernetes_form_and_ignores_its_own_label() -> None:
    t = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}
    h = deployutil.template_hash(t)
    assert h and set(h) <= set(deployutil.SAFE_ALPHABET)
    assert deployutil.template_hash(t, 1) != h
    labelled = {"metadata": {"labels": {"app": "web", "pod-template-hash": h}}, "spec": t["spec"]}
    assert deployutil.equal_ignore_hash(labelled, t)


def test_history_cleanup_keeps_the_newest_revisions() -> None:
    d = deployment(1)
    d["spec"]["revisionHistoryLimit"] = 1
    olds = [rs(f"web-{i}", 0, 0, i, **{apps.REVISION: str(i)}) for i in (1, 2, 3)]
    assert [deployutil.name(r) for r in deployutil.history_to_clean(d, olds)] == ["web-1", "web-2"]
