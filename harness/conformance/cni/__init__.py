"""Scenario 35: a black-box CNI spec suite (``podlab cni-test``); see docs/cni.md."""
