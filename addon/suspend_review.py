#!/usr/bin/env python3
"""A before-handler that replaces the core action of user.suspend with <skipaction/>.

Policy: only the super user (level 30) suspends accounts directly. When an administrator
(level 29) asks, the suspension is queued in var/suspend.queue for review instead, and the
handler answers <skipaction/>: the panel does not suspend anyone, after-handlers do not run,
and the caller gets this handler's document.
"""

import os
import sys
import xml.etree.ElementTree as ET

doc = ET.fromstring(sys.stdin.buffer.read())
if int(os.environ["AUTH_LEVEL"]) < 30:
    names = os.environ.get("PARAM_elid", "").split(", ")
    with open("var/suspend.queue", "a", encoding="utf-8") as queue:
        for name in names:
            queue.write(f"{name}\t{os.environ['AUTH_USER']}\n")
    ET.SubElement(doc, "skipaction")
    ET.SubElement(doc, "ok")
    banner = ET.SubElement(doc, "banner")
    banner.text = f"Suspension of {', '.join(names)} queued for review"
sys.stdout.write(ET.tostring(doc, encoding="unicode") + "\n")
