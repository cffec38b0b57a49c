"""``podlab load``: clusterloader2's load test against a lab with hollow and real nodes.

``sli.py`` computes and judges the SLIs, ``preflight.py`` refuses a size the
machine cannot hold, ``run.py`` drives the load and collects the samples,
``cli.py`` is the verb (docs/load.md).
"""
