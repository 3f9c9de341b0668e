"""The panel's HTTP API (``mgrhooks serve``): contract, auth, sessions, resident panel, app, server."""
