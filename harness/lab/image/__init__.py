"""The VM guest image: built here from Debian's packages, cached by content.

``recipe`` says what goes in (suite, packages, the files under ``guest/``) and
derives the cache key from exactly that; ``build`` runs debootstrap and turns
the tree into a kernel, a small initrd and a qcow2 base disk under
``/var/cache/podlab/images/<key>/``. Per-node state never enters the image:
each guest boots a copy-on-write overlay and gets its identity (hostname,
addresses, routes, ssh keys) from qemu's fw_cfg at boot, read by
``guest/podlab-identity``.
"""
