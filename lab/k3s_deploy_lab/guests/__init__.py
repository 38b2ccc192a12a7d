"""Lab guests: every running simulated VM as a cloud-init'ed Linux guest reachable over real SSH.

See docs/lab-guests.md. Runs as its own process (`python -m k3s_deploy_lab.guests serve`), started by
the lab's `guests` component (component.py).
"""
