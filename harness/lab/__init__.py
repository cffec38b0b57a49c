"""Lab backends: turn a LabPlan into machines Ansible can reach.

``backend.py`` holds the Protocol and the registry (netns, ssh, containerlab);
``netns.py`` builds labs out of Linux namespaces (see docs/netns-backend.md).
"""
