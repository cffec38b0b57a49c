"""Kubernetes' own rules, as pure functions: no etcd, no clock, no kernel.

Shared by the host side (``podlab apply``, ``get``, ``rollout``), the controller
manager (``harness/controllers``) and the node agent, so all of them agree on
what a quantity is worth, when a rollout may scale, what the autoscaler wants
and which pod a quota refuses:

- ``quantity``: resource quantities (``500m``, ``128Mi``) and their canonical text;
- ``intstr``: int-or-percent values (``maxSurge: 25%``);
- ``fielderr``: Kubernetes' field error texts (``Invalid value: …``);
- ``resources``: container requests/limits, their validation and cgroup values;
- ``apps``, ``autoscaling``, ``policy``: the Deployment, ReplicaSet, HPA,
  ResourceQuota and LimitRange kinds (models and validation);
- ``admission``: LimitRanger defaults and checks, ResourceQuota evaluation;
- ``deployutil``, ``hpacalc``, ``scheduling``: the controllers' arithmetic.

Models build on ``harness.kube.fields`` (the shared manifest vocabulary: strict
models, ObjectMeta, label rules), which is pure too.
"""
