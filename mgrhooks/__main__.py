from mgrhooks.cli import run

run()
