"""Service proxy modes (kube-proxy's job): see registry.py for the modes."""
