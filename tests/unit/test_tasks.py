"""The command line (tasks.py): one meaning per short flag across every task."""

from __future__ import annotations

import tasks


def _all_tasks(collection, prefix=""):
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from _all_tasks(sub, f"{prefix}{name}.")


def test_short_flag_n_means_name_in_every_task_and_network_has_none():
    for name, task in _all_tasks(tasks.ns):
        for arg in task.get_arguments():
            if "n" in arg.names:
                assert arg.name == "name", f"inv {name}: -n is --{arg.name}"
            if arg.name == "network":
                assert arg.names == ("network",), f"inv {name}: --network has short flag {arg.names}"
