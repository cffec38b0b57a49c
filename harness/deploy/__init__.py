"""Deploy: install etcd and the node agent on a lab's nodes (or VMs) with Ansible.

``wheel`` builds the wheelhouse nodes install from, ``runner`` is the single
wrapper over ansible-runner (events → DeployResult), ``deploy`` ties them to a
lab's inventory, ``progress`` draws the live table and recap, ``cli`` adds
``podlab deploy``. The playbooks live in ``playbooks/`` at the repository root.
"""
