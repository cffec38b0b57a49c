"""Conformance runs: the pytest plugin, its fixtures, and the suites shipped with podlab.

``podlab test --lab NAME`` (or ``--topology FILE``) runs
``pytest --pyargs harness.conformance.suites`` with the plugin
(``plugin.py``, entry point ``pytest11: podlab``); results go to results JSON
(``harness.results``) and JUnit XML, and ``podlab report`` renders them.

How to add a suite: a ``test_*.py`` module in ``suites/`` whose tests carry
``@pytest.mark.scenario(N)`` (N from CONFORMANCE.md) and use the fixtures
``lab``, ``mode``, ``nodes``, ``pod_factory`` / ``module_pod_factory`` and
``record``. Probe through ``harness.probes`` (command/parse pairs; traffic is
sent by ``netcheck`` on the nodes, never from the host), assert through
``asserts`` so failures read like specs, skip with the reason when the lab
cannot offer what the test needs, and add the module to ``plugin.MODULE_ORDER``
if it must run before or after others within a mode.
"""
