#!/bin/sh
# An xml after-handler on desktop with proirity="after" base="project": it runs after the
# product's own internal handler added <balance>, reads it, and inserts a notice before
# </doc> with sed (the document always ends with </doc> on a line of its own).
doc=$(cat)
balance=$(printf '%s\n' "$doc" | sed -n 's:.*<balance>\([^<]*\)</balance>.*:\1:p' | head -n 1)
if [ -z "$balance" ]; then
    notice="<notice>No balance in the document</notice>"
elif awk -v b="$balance" 'BEGIN { exit !(b < 10) }'; then
    notice="<notice>Balance is low: $balance</notice>"
else
    notice="<notice>Balance: $balance</notice>"
fi
printf '%s\n' "$doc" | sed "s|^</doc>|$notice\n</doc>|"
