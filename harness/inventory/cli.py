"""`podlab inventory`: print a lab's generated Ansible inventory."""

from __future__ import annotations

import argparse
import sys

from harness.errors import UserError
from harness.inventory import inventory_path, project_home


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``inventory``."""
    p = sub.add_parser("inventory", help="print a lab's Ansible inventory (inventories/<lab>.yml)")
    p.add_argument("lab", help="lab name")
    p.add_argument("--path", action="store_true", help="print only the file's path")
    p.set_defaults(func=_inventory)


def _inventory(args: argparse.Namespace) -> int:
    path = inventory_path(args.lab, project_home())
    if not path.exists():
        raise UserError(
            f"no inventory for lab {args.lab!r} at {path} (fix: bring it up with podlab up FILE)"
        )
    sys.stdout.write(f"{path}\n" if args.path else path.read_text())
    return 0
