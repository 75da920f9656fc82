"""Under pytest-xdist, each target's gate tests go to one worker, which loads the target once
and shares its forward pass among them; other tests are spread by module (xdist's loadscope)."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


class TargetScheduling(LoadScopeScheduling):
    """Scope of a gate test ``...::test_gate[<target id>:<gate>]``: its target; else its module
    (a one-target run names no target in its ids: the gate suite module is then the scope)."""

    def __init__(self, config, log, target_ids):
        super().__init__(config, log)
        self.target_ids = sorted(target_ids, key=len, reverse=True)  # longest first: "a:b" before "a"

    def _split_scope(self, nodeid: str) -> str:
        param = nodeid.partition("[")[2]
        for target_id in self.target_ids:
            if param.startswith(f"{target_id}:"):
                return f"segcheck target {target_id}"
        return super()._split_scope(nodeid)
