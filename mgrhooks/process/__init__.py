"""Handler processes: starting them (:mod:`.spawn`), running one handler
(:mod:`.runner`), and keeping its process tree contained (:mod:`.containment`)."""
