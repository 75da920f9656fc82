"""segcheck's own per-class IoU, registered so that ``suites/metrics`` always tests at least one
implementation, through the same hook a user's ``--plugin my_metrics.py`` implements."""

from segcheck.hookspecs import hookimpl
from segcheck.metrics import per_class_iou


@hookimpl
def segcheck_register_metrics(registry):
    registry.add("segcheck", per_class_iou, kind="per_class_iou")
