"""podlab: testbed automation and conformance harness for pod networking."""

__version__ = "0.1.0"
