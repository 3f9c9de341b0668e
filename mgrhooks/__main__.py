from mgrhooks.cli import main

raise SystemExit(main())
