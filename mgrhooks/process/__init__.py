"""Handler processes: starting them (:mod:`.spawn`), running one handler
(:mod:`.runner`), keeping its process tree contained (:mod:`.containment`), and the
object a caller owns for all of it (:class:`Processes`)."""

from .processes import Processes

__all__ = ["Processes"]
